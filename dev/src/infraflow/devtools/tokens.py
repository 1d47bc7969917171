"""Mint bearer tokens for the local stack (signed with its HS256 secret in
``.state/stack/secrets.json``), for users other than the printed admin:

    .venv/bin/python -m infraflow.devtools.tokens --sub ops-1 --role provider_operator
    .venv/bin/python -m infraflow.devtools.tokens --sub bob --project prj-a=member
    .venv/bin/python -m infraflow.devtools.tokens --sub eve --role support --ttl 3600

Atlas roles: super_admin, provider_admin, provider_operator (write); support, provider_revenue
(read). Arc users: ``--project <id>=admin|member|viewer`` (repeatable) and no role.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from infraflow.devtools.stack import mint_token

ATLAS_ROLES = ("super_admin", "provider_admin", "provider_operator", "support", "provider_revenue")
PROJECT_ROLES = ("admin", "member", "viewer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mint a bearer token for the local stack.")
    parser.add_argument("--state-dir", default=".state/stack", help="where `dev.py up` keeps state")
    parser.add_argument("--sub", required=True, help="the user id (becomes runs' triggeredBy)")
    parser.add_argument("--role", action="append", default=[], choices=ATLAS_ROLES)
    parser.add_argument(
        "--project", action="append", default=[], metavar="ID=ROLE", help="an Arc project role"
    )
    parser.add_argument("--ttl", type=int, default=7 * 24 * 3600, help="lifetime in seconds")
    args = parser.parse_args(argv)
    projects: dict[str, str] = {}
    for item in args.project:
        project, _, role = item.partition("=")
        if not project or role not in PROJECT_ROLES:
            parser.error(f"--project wants ID=ROLE with ROLE one of {', '.join(PROJECT_ROLES)}")
        projects[project] = role
    secrets_file = Path(args.state_dir) / "secrets.json"
    if not secrets_file.exists():
        parser.error(f"{secrets_file} not found: start the stack first (python3 dev.py up)")
    secret = json.loads(secrets_file.read_text())["jwt_secret"]
    print(mint_token(secret, args.sub, roles=args.role, projects=projects or None, ttl_s=args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
