"""``python -m service`` is the ``hypoxnode`` command."""

from service.cli import main

raise SystemExit(main())
