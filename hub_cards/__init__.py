"""Model-card template and per-model card prose: package data, installed as ``protozoo.hub_cards``."""
