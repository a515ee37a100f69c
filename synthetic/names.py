"""The synthesizers a node may choose, by name: checked before SDV is even imported."""

SYNTHESIZERS = ("gaussian_copula", "ctgan", "tvae")
