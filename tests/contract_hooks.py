"""What schemathesis needs to know beyond the OpenAPI document: how to generate ``format: printable`` text.

Imported by ``tests/integration/test_api_contract.py``; for the CLI, from the repository's root::

    SCHEMATHESIS_HOOKS=tests.contract_hooks st run http://127.0.0.1:8000/openapi.json --seed 1
"""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

from session_monitor.protocol import PRINTABLE_FORMAT

schemathesis.openapi.format(PRINTABLE_FORMAT, st.text(st.characters(exclude_categories=("Cc", "Cs", "Cn"))))
