from autopdm.cli import app

app()
