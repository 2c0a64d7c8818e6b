"""The protozoo training module: ``python -m train --config default [key=value ...]``.

Installed from the wheel it is ``protozoo.train`` (``python -m protozoo.train``, ``protozoo train``).
"""
