"""Config: find the config tree, compose it with overrides, validate it."""
