"""Running experiments: gin config, run dirs, the Trainer, evaluation, the pipeline, reports."""
