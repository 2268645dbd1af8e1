"""``python -m service`` is the ``hypoxnode`` command."""

from service.cli.main import main

raise SystemExit(main())
