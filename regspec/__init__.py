"""regspec: a declarative optimization-graph compiler."""
