"""Runs inside the program's sandbox, in the program's own interpreter: runs the program, then
reports VALUES, never a verdict (it does not know the expected answer; nothing in the sandbox does).

    harness.py call    stdin: {"call": "<expression>"}. Runs /sandbox/main.py as module
                       ``solution``, evaluates the expression in its namespace and writes one line
                       to fd 3: {"value": <plain>} | {"not_plain": "<type>"} | {"raised": "<type>"}
    harness.py serve   stdin: {"entry_point": "<name>"}. Runs /sandbox/main.py, then answers each
                       call read from fd 3 ({"args": <plain tuple>, "kwargs": <plain dict>}) with one
                       line on fd 4, of the same three kinds (the check runs in another sandbox)

The program shares this interpreter, so it can do anything this file does (write to fd 3 itself,
exit before the report): all it can achieve that way is to report a value of its choosing or none,
and a value is compared outside with an expected one the sandbox never saw.
"""

import builtins
import json
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
        return json.dumps({"raised": type(e).__name__})
    try:
        return '{"value":' + plain.encode(value) + "}"
    except plain.NotPlain:
        return json.dumps({"not_plain": type(value).__name__})


def call(request: dict) -> None:
    namespace = {}

    def run():
        namespace.update(load_program())
        return eval(compile(request["call"], "<call>", "eval"), namespace)

    plain.send(3, answer(run))


def serve(request: dict) -> None:
    namespace = load_program()
    function = namespace.get(request["entry_point"])
    with os.fdopen(3, "rb") as calls:
        for line in calls:
            args = plain.decode(line)
            plain.send(4, answer(lambda a=args: function(*a["args"], **a["kwargs"])))


def main() -> None:
    mode = sys.argv[1]
    request = json.loads(sys.stdin.read())
    {"call": call, "serve": serve}[mode](request)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)  # the report is written: nothing the program left behind runs after it


if __name__ == "__main__":
    main()
