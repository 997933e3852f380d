"""Metrics on scores and rankings: full ranking, target items, the sampled protocol, exposure, detection. They
sit below the models, whose training loops early-stop on them."""
