"""Follow-up: pairing studies of one subject and comparing their lesions."""
