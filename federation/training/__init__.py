"""Models, data tensors and Opacus DP-SGD training used by the node's training app.

This package is node-installed code (DESIGN §2.3): the FAB a run ships only
names it, so what touches data is always the hospital's own copy.
"""
