"""The names a spec may use for concepts and languages: the one place to add either."""

from __future__ import annotations

from dataclasses import dataclass

CONCEPTS: tuple[str, ...] = (
    "morality",
    "deontology",
    "utilitarianism",
    "fairness",
    "truthfulness",
    "toxicity",
    "harmfulness",
)


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    script: str  # the Unicode script its texts are written in
    iso3: str  # ISO 639-3 code, as URIEL/lang2vec name languages


# Ordered as in the paper: high-resource first, low-resource last.
LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language("en", "English", "Latin", "eng"),
        Language("fr", "French", "Latin", "fra"),
        Language("zh", "Chinese", "Han", "zho"),
        Language("es", "Spanish", "Latin", "spa"),
        Language("pt", "Portuguese", "Latin", "por"),
        Language("vi", "Vietnamese", "Latin", "vie"),
        Language("ca", "Catalan", "Latin", "cat"),
        Language("id", "Indonesian", "Latin", "ind"),
        Language("ja", "Japanese", "Japanese", "jpn"),
        Language("ko", "Korean", "Hangul", "kor"),
        Language("fi", "Finnish", "Latin", "fin"),
        Language("hu", "Hungarian", "Latin", "hun"),
        Language("ta", "Tamil", "Tamil", "tam"),
        Language("te", "Telugu", "Telugu", "tel"),
        Language("sw", "Swahili", "Latin", "swa"),
        Language("ny", "Chichewa", "Latin", "nya"),
    )
}

# The paper's high-resource group for balanced multilingual models (BLOOMZ): its first eight
# languages. Families override it in their specs (LLaMA2: en; Qwen: en, zh).
HIGH_RESOURCE: tuple[str, ...] = ("en", "fr", "zh", "es", "pt", "vi", "ca", "id")
