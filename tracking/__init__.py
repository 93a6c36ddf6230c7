"""MLflow at the edge: where runs go (:mod:`tracking.store`) and what they hold (:mod:`tracking.runs`)."""
