from neve.cli import app

app()
