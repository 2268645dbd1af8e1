"""Statistics: test-retest repeatability (wCV, RC, ICC) with confidence intervals."""
