from braid.cli.main import app

app()
