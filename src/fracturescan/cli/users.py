"""``fracturescan user``: list accounts, unlock one, reset a password, create the first admin.

One-time passwords are printed on this terminal only (never logged): whoever can run the
command on the server is trusted with the accounts, as with ``api-key``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import typer

from ..errors import FracturescanError
from . import output
from .core import app, command
from .db_url import DB_OPTION, open_database

if TYPE_CHECKING:  # sqlalchemy is an optional extra
    from sqlalchemy import Engine

users_app = typer.Typer(help="List users, unlock one, reset a password, create the first admin.",
                        no_args_is_help=True)
app.add_typer(users_app, name="user")


def announce_first_admin(engine: Engine) -> bool:
    """Create ``admin`` with a one-time password when the database has no user yet, and print
    it on the terminal; True if it did. ``FRACTURESCAN_ADMIN_PASSWORD``, when set, was used by
    :func:`~fracturescan.store.users.open_store` already."""
    from ..store.users import ensure_admin

    one_time = ensure_admin(engine, None)
    if not one_time:
        return False
    typer.echo("First start: created the administrator account 'admin' with the one-time password\n\n"
               f"    {one_time}\n\n"
               "Sign in with it and choose your own password. It is shown only here, never logged; "
               "`fracturescan user reset-password admin` makes a new one.")
    return True


@command("list", group=users_app)
def list_users(db: str = DB_OPTION) -> None:
    """Every account: role, state, failed logins since the last success, creation time."""
    from ..store.users import list_users as listing

    rows = [(u["username"], u["role"], "active" if u["active"] else "disabled", u["failed_logins"],
             "yes" if u["must_change_password"] else "no", u["created_at (UTC)"]) for u in listing(open_database(db))]
    typer.echo(output.table(("user", "role", "state", "failed logins", "must change password", "created (UTC)"),
                            rows))


@command("unlock", group=users_app)
def unlock(username: str = typer.Argument(..., help="The account whose failed logins to forget."),
           db: str = DB_OPTION) -> None:
    """Forget an account's failed logins, so every computer may try it again at once."""
    from ..store.users import unlock as forget

    forget(open_database(db), username, actor="cli")
    typer.echo(f"Unlocked {username}: its failed logins are forgotten.")


@command("reset-password", group=users_app)
def reset_password(username: str = typer.Argument(..., help="The account to give a new password."),
                   db: str = DB_OPTION) -> None:
    """Give an account a one-time password (printed here once); it must choose its own at login.

    Also ends the account's open sessions and forgets its failed logins."""
    from ..store.users import set_password
    from ..store.users import unlock as forget

    engine = open_database(db)
    one_time = secrets.token_urlsafe(12)
    set_password(engine, username, one_time, actor="cli", must_change=True)
    forget(engine, username, actor="cli")
    typer.echo(f"New one-time password for {username} (shown once; they choose their own at login):\n\n"
               f"    {one_time}\n")


@command("create-admin", group=users_app)
def create_admin(db: str = DB_OPTION) -> None:
    """Create the database and its first administrator, 'admin', with a one-time password."""
    if not announce_first_admin(open_database(db)):
        raise FracturescanError("This database has users already; `fracturescan user list` shows them and "
                                "`fracturescan user reset-password NAME` gives one a new password.")
