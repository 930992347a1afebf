"""Training: the LightningModule, its callbacks (the run folder's writers), LR schedules, W&B set-up."""
