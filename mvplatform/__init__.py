"""mvp: a declarative platform for multilingual value concepts in language models.

Science lives here (specs, data, models, activations, concept vectors, figures); distribution lives
in ``ray_jobs`` and tracking in ``tracking``, so every module here can be tested alone.
"""

__version__ = "0.1.0"
