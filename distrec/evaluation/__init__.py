"""Measuring a trained model: a poisoning cell's target exposure and accuracy (``attack_effect``), a metric-learning
embedder's retrieval recall (``retrieval``). The metrics themselves are in :mod:`distrec.metrics`."""
