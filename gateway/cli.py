"""The ops command line: `flask --app gateway <command>`."""

import click
from flask import current_app
from flask.cli import with_appcontext


def register(app):
    """Attach the gateway's commands to the app's CLI."""
    app.cli.add_command(init_db)


@click.command("init-db")
@with_appcontext
def init_db():
    """Create the database schema (idempotent; the service also does it on start)."""
    store = current_app.extensions["store"]
    store.init_schema()
    click.echo(f"schema ready in {store.path}")
