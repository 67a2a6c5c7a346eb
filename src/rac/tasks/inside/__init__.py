"""What runs INSIDE a sandbox, next to or instead of the untrusted program: stdlib only, never
imports rac, and decides nothing. Its files are copied into each sandbox (``/harness``); the
verdict is reached outside, in ``rac.tasks.code``, from the plain data these report."""
