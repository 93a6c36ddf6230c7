"""Ray at the edge: model-holding workers (:mod:`ray_jobs.worker`) and the submission driver
(:mod:`ray_jobs.submit`) that expands a spec into Ray work and streams results to MLflow."""
