"""Meta-tests: the conformance suite must fail on deliberately broken backends."""
