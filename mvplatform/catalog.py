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


# Ordered as in the paper: high-resource first, low-resource last.
LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language("en", "English", "Latin"),
        Language("fr", "French", "Latin"),
        Language("zh", "Chinese", "Han"),
        Language("es", "Spanish", "Latin"),
        Language("pt", "Portuguese", "Latin"),
        Language("vi", "Vietnamese", "Latin"),
        Language("ca", "Catalan", "Latin"),
        Language("id", "Indonesian", "Latin"),
        Language("ja", "Japanese", "Japanese"),
        Language("ko", "Korean", "Hangul"),
        Language("fi", "Finnish", "Latin"),
        Language("hu", "Hungarian", "Latin"),
        Language("ta", "Tamil", "Tamil"),
        Language("te", "Telugu", "Telugu"),
        Language("sw", "Swahili", "Latin"),
        Language("ny", "Chichewa", "Latin"),
    )
}
