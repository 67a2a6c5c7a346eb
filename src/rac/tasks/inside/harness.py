"""Runs inside the program's sandbox, in the program's own interpreter: runs the program, then
reports VALUES, never a verdict (it does not know the expected answer; nothing in the sandbox does).

    harness.py call          stdin: the expression. Runs /sandbox/main.py as module ``solution``,
                             evaluates the expression in its namespace and writes one line to fd 3:
                             {"value": <plain>} | {"not_plain": "<type>"} | {"raised": "<type>"}
    harness.py serve NAME    Runs /sandbox/main.py, then answers each call of function NAME read
                             from fd 3 (plain {"args": (...), "kwargs": {...}}) with one line on
                             fd 4, of the same three kinds (the check runs in another sandbox)

The program shares this interpreter, so it can do anything this file does (write to fd 3 itself,
exit before the report): all it can achieve that way is to report a value of its choosing or none,
and a value is compared outside with an expected one the sandbox never saw.
"""

import builtins
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plain  # noqa: E402  (beside this file in /harness)

PROGRAM = "/sandbox/main.py"


def load_program() -> dict:
    """The program's namespace after running it as a module named ``solution``."""
    with open(PROGRAM) as f:
        code = compile(f.read(), PROGRAM, "exec")
    namespace = {"__name__": "solution", "__file__": PROGRAM, "__builtins__": builtins}
    exec(code, namespace)
    return namespace


def answer(thunk) -> str:
    """One report line for the value of ``thunk()``, or for what it raised."""
    try:
        value = thunk()
    except Exception as e:
        return '{"raised":' + plain.encode(type(e).__name__) + "}"
    try:
        return '{"value":' + plain.encode(value) + "}"
    except plain.NotPlain:
        return '{"not_plain":' + plain.encode(type(value).__name__) + "}"


def call() -> None:
    expression = sys.stdin.read()  # before the program runs: its stdin is then at end of file

    def run():
        return eval(compile(expression, "<call>", "eval"), load_program())

    plain.send(3, answer(run))


def serve(name: str) -> None:
    function = load_program().get(name)
    with os.fdopen(3, "rb") as calls:
        for line in calls:
            args = plain.decode(line)
            plain.send(4, answer(lambda a=args: function(*a["args"], **a["kwargs"])))


def main() -> None:
    if sys.argv[1] == "call":
        call()
    else:
        serve(sys.argv[2])
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)  # the report is written: nothing the program left behind runs after it


if __name__ == "__main__":
    main()
