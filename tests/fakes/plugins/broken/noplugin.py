"""A module in a plugin folder that forgot to define `plugin`."""

VALUE = 1
