"""Distributed orchestration on Ray."""
