from .main import console

console(prog_name="bbimg")
