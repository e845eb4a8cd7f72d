from xaudit.cli import app

app(prog_name="xaudit")
