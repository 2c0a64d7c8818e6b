"""The protozoo training module: ``python -m train --config train/configs/default.yaml [key=value ...]``."""
