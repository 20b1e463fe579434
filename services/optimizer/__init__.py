"""peftlab: optimizer. Stateless Bayesian optimization (Suggest), LoRA rank and batch-size recommendations."""
