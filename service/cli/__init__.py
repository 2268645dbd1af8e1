"""Command line: ``hypoxnode serve``, ``quantify``, ``demo``, ``suv``, ``repeatability``, ``route-
test`` and the operator client."""
