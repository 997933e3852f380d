"""distrec: Ray-distributed adversarial attack and defense studies on recommender and ranking systems."""

__version__ = "0.1.0"
