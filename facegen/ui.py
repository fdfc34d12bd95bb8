"""The Gradio page: the only module that imports gradio. Logic lives in `facegen.studio`."""

from __future__ import annotations

import random
from typing import Any

import gradio as gr

from facegen.pipeline import MAX_SEED
from facegen.sampling import (
    DEFAULT_STEPS,
    EVERYWHERE,
    SAMPLER_LABELS,
    default_guidance,
    interval_text,
    network_evaluations,
    request_evaluations,
)
from facegen.studio import Frame, Result, Studio, StudioError, face_grid, parse_params, step_range

MAX_GROUP_SLIDERS = 8
CSS = """
#preview img, #faces img { image-rendering: pixelated; object-fit: contain; }
.mix-readout { font-variant-numeric: tabular-nums; }
"""


def _card(studio: Studio, name: str | None) -> str:
    if not studio.models:
        lines = [
            "**No model loaded.** Train one with e.g. `python train.py --model ddpm --data PATH`, then put",
            "its `runs/ddpm/checkpoint` folder under `checkpoints/` and restart.",
        ]
        lines += [f"- `{k}` failed: {v}" for k, v in studio.failures.items()]
        return "\n".join(lines)
    gen = studio.models.get(name or "")
    if gen is None:
        return ""
    c = gen.card
    text = (
        f"**{gen.name}** · {gen.family.upper()} · {gen.config.image_size}px · trained on `{c.get('data', '?')}` "
        f"({c.get('train_images', '?')} faces) for {c.get('step', '?')} steps, {c.get('wall_time_s', 0) / 3600:.1f} h "
        f"on {c.get('hardware', '?')} · {c.get('parameters', 0) / 1e6:.1f}M parameters · sha `{gen.checkpoint_hash}`"
    )
    if studio.failures:
        text += "\n\n" + "\n".join(f"⚠️ `{k}` not loaded: {v}" for k, v in studio.failures.items())
    return text


def _mix_readout(names: list[str], weights: list[float]) -> str:
    total = sum(w for w in weights if w > 0)
    if total <= 0:
        return "⚠️ All weights are zero: give at least one group a positive weight."
    return " · ".join(f"{n} **{100 * max(w, 0) / total:.0f}%**" for n, w in zip(names, weights, strict=False))


def build(studio: Studio) -> gr.Blocks:
    names = list(studio.models)
    first = studio.models[names[0]] if names else None
    groups = list(first.groups) if first else ["White", "Black", "Asian", "Indian", "Others"]

    with gr.Blocks(title="facegen studio") as demo:
        gr.Markdown(
            "# facegen studio\nPick a model, a demographic mix and a seed, then watch a face emerge. "
            "All faces are synthetic."
        )
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=1):
                    model = gr.Dropdown(names, value=names[0] if names else None, label="Model", elem_id="model")
                    card = gr.Markdown(_card(studio, names[0] if names else None))
                    # All loaded families' samplers: the server checks a value against the choices given here.
                    all_samplers = [
                        (SAMPLER_LABELS[s], s)
                        for s in dict.fromkeys(s for g in studio.models.values() for s in g.samplers)
                    ]
                    sampler = gr.Dropdown(
                        all_samplers,
                        value=_default_sampler(first),
                        label="Sampler",
                        elem_id="sampler",
                        allow_custom_value=True,  # checked by the studio, which names the problem
                        visible=bool(first and not first.one_pass),
                    )
                    # Built with every sampler's range, which is what Gradio checks API calls against (the
                    # studio checks the sampler's own); a page narrows it to the sampler's range on load and
                    # at every model or sampler change (Gradio keeps those bounds per session).
                    steps = gr.Slider(
                        1,
                        studio.limits.max_steps,
                        value=DEFAULT_STEPS.get(_default_sampler(first) or "", 20),
                        step=1,
                        label=_steps_label(first, _default_sampler(first), studio),
                        visible=bool(first and not first.one_pass),
                        elem_id="steps",
                    )
                    nfe = gr.Markdown(elem_classes="mix-readout", elem_id="nfe")
                    with gr.Row():
                        seed = gr.Number(0, label="Seed", minimum=0, maximum=MAX_SEED, step=1)
                        dice = gr.Button("🎲 Random seed", size="sm")
                    faces = gr.Slider(1, studio.limits.max_faces, value=1, step=1, label="Faces")
                    gr.Markdown("**Demographic mix** (weights are normalised to 100%)")
                    sliders = [
                        gr.Slider(
                            0,
                            1,
                            value=1.0 if i == 0 else 0.0,
                            step=0.05,
                            label=groups[i] if i < len(groups) else f"group {i}",
                            visible=i < len(groups),
                            elem_id=f"mix-{i}",
                        )
                        for i in range(MAX_GROUP_SLIDERS)
                    ]
                    readout = gr.Markdown(
                        _mix_readout(groups, [1.0] + [0.0] * (len(groups) - 1)),
                        elem_classes="mix-readout",
                        elem_id="mix-readout",
                    )
                    guidance = gr.Slider(
                        0,
                        10,
                        value=default_guidance(first.config) if first else 1.0,
                        step=0.5,
                        label="Guidance scale (1 = conditional, 0 = unconditional)",
                        elem_id="guidance",
                        visible=bool(first and not first.one_pass),
                    )
                    preview = gr.Radio(
                        [("Predicted clean face x̂0", "x0"), ("Noisy state x_t", "x_t")],
                        value="x0",
                        label="Preview",
                        visible=bool(first and not first.one_pass),
                    )
                    with gr.Row():
                        go = gr.Button("Generate", variant="primary", elem_id="generate")
                        stop = gr.Button("Stop", variant="stop", elem_id="stop")
                with gr.Column(scale=2):
                    live = gr.Image(label="Live", type="pil", format="png", elem_id="preview", height=420)
                    status = gr.Markdown(elem_id="status")
                    files = gr.File(
                        label="Download PNGs (settings in PNG text chunks)", file_count="multiple", elem_id="files"
                    )
                    animation = gr.Image(label="Trajectory / morph", type="filepath", elem_id="animation")
                    repro = gr.Code(label="Reproduce the first face", language="shell", elem_id="repro")
        with gr.Tab("Compare"):
            gr.Markdown("The seed and mix of the Generate tab through every loaded model, default sampler.")
            compare_btn = gr.Button("Compare all models", variant="primary", elem_id="compare")
            compare_out = gr.Gallery(label="Side by side", columns=4, height=320, elem_id="compare-out")

        # The model the sampler, steps and guidance controls were last set up for, by on_model. None for an
        # API call (no page): its values are taken as given. A Generate pressed while the page is still
        # switching models carries the old model here, and the new model's defaults are used instead.
        configured = gr.State(None)

        def on_model(name: str) -> list[Any]:
            gen = studio.models.get(name)
            if gen is None:
                return [gr.update()] * (7 + MAX_GROUP_SLIDERS)
            diffusion = not gen.one_pass
            s = _default_sampler(gen)
            updates = [
                _card(studio, name),
                gr.update(choices=_sampler_choices(gen), value=s, visible=diffusion),
                _steps_update(gen, s, studio),
                gr.update(value=default_guidance(gen.config), visible=diffusion),
                gr.update(visible=diffusion),
                _mix_readout(list(gen.groups), [1.0] + [0.0] * (len(gen.groups) - 1)),
                name,
            ]
            updates += [
                gr.update(
                    label=gen.groups[i] if i < len(gen.groups) else "",
                    visible=i < len(gen.groups),
                    value=1.0 if i == 0 else 0.0,
                )
                for i in range(MAX_GROUP_SLIDERS)
            ]
            return updates

        model_outputs = [card, sampler, steps, guidance, preview, readout, configured, *sliders]
        # Generate is disabled from the switch until every control shows the new model's settings.
        model.change(_lock, None, go, queue=False, api_visibility="private").then(
            on_model, model, model_outputs, api_visibility="private"
        ).then(_unlock, None, go, queue=False, api_visibility="private")
        demo.load(on_model, model, model_outputs, api_visibility="private")

        def on_sampler(name: str, s: str) -> Any:
            gen = studio.models.get(name)
            if gen is None or s not in gen.samplers:
                return gr.update()
            return _steps_update(gen, s, studio)

        sampler.change(on_sampler, [model, sampler], steps, api_visibility="private")

        def on_cost(name: str, s: str, n: float, g: float) -> str:
            gen = studio.models.get(name)
            if gen is None:
                return ""
            s = s if s in gen.samplers else gen.samplers[0]
            steps_n = 1 if gen.one_pass else int(n or 1)
            where = ""
            try:  # the request the app will make, with the model's guidance interval
                req = gen.request([0], [1.0] + [0.0] * (len(gen.groups) - 1), s, steps_n, float(g or 1))
                count = request_evaluations(gen.config, req)
                if req.guidance_interval != EVERYWHERE and req.guidance not in (0.0, 1.0):
                    where = f" (guidance only at noise levels σ in {interval_text(req.guidance_interval)})"
            except ValueError:  # out-of-range raw values while the sliders catch up
                count = network_evaluations(s, steps_n, float(g or 1))
            return f"Network evaluations per face: **{count}**{where}"

        # A display only, so it takes the raw values (preprocess=False): at a model switch it runs with the
        # steps of the previous model, which Gradio's bounds check, already narrowed to the new model's
        # sampler, would otherwise reject with an error toast (e.g. 1 step of a DCGAN against DPM-Solver++'s 2).
        for comp in (model, sampler, steps, guidance):
            comp.change(on_cost, [model, sampler, steps, guidance], nfe, api_visibility="private", preprocess=False)

        def on_mix(name: str, *weights: float) -> str:
            gen = studio.models.get(name)
            k = len(gen.groups) if gen else len(groups)
            return _mix_readout(list(gen.groups) if gen else groups, [float(w or 0) for w in weights[:k]])

        for s_ in sliders:
            s_.change(on_mix, [model, *sliders], readout, api_visibility="private", show_progress="hidden")
        dice.click(lambda: random.randint(0, MAX_SEED), None, seed, api_visibility="private")

        def generate(
            name: str,
            s: str,
            n_steps: float,
            seed_v: float,
            n_faces: float,
            g: float,
            pv: str,
            set_up_for: str | None,
            *weights: float,
        ):
            gen = studio.models.get(name)
            k = len(gen.groups) if gen else len(weights)
            notice = ""
            if gen and set_up_for is not None and set_up_for != name:
                # Pressed while the page was switching models: the controls still hold the previous
                # model's settings. The model is the newer choice, so it runs at its own defaults.
                s, n_steps, g = gen.samplers[0], DEFAULT_STEPS[gen.samplers[0]], default_guidance(gen.config)
                notice = f"  \n(Pressed while the page switched to {name}: ran at its default settings.)"
            try:
                params = parse_params(
                    studio.limits,
                    model=name or "",
                    sampler=s if gen and not gen.one_pass else None,
                    steps=None if gen is None or gen.one_pass else _as_int(n_steps, "steps"),
                    seed=_as_int(seed_v, "seed"),
                    faces=_as_int(n_faces, "faces"),
                    weights=tuple(float(w) if w is not None else 0.0 for w in weights[:k]),
                    guidance=float(g) if g is not None and gen and not gen.one_pass else None,
                    preview=pv or "x0",
                )
                stream = studio.stream(params)
                for item in stream:
                    if isinstance(item, Frame):
                        yield {
                            live: item.image,
                            status: f"Step **{item.index}/{item.total}** · "
                            f"{item.elapsed:.1f} s · {item.nfe} network evaluations{notice}",
                        }
                    elif isinstance(item, Result):
                        yield {
                            live: _result_grid(item),
                            status: f"Done: {len(item.faces)} face(s) in **{item.elapsed:.2f} s**. "
                            f"Settings: `{_settings_line(item.settings)}`{_seen_line(item)}{notice}",
                            files: [str(p) for p in item.png_paths],
                            animation: str(item.animation),
                            repro: item.command,
                        }
            except StudioError as err:
                raise gr.Error(str(err), print_exception=False) from None

        inputs = [model, sampler, steps, seed, faces, guidance, preview, configured, *sliders]
        event = go.click(
            generate,
            inputs,
            [live, status, files, animation, repro],
            api_name="generate",
            concurrency_limit=studio.limits.concurrency,
            concurrency_id="sampling",
        )
        stop.click(None, None, None, cancels=[event], api_visibility="private")

        def compare(seed_v: float, *weights: float):
            try:
                return studio.compare(_as_int(seed_v, "seed"), [float(w or 0) for w in weights])
            except StudioError as err:
                raise gr.Error(str(err), print_exception=False) from None

        compare_btn.click(
            compare,
            [seed, *sliders],
            compare_out,
            api_name="compare",
            concurrency_limit=studio.limits.concurrency,
            concurrency_id="sampling",
        )
    return demo


def _lock() -> Any:
    return gr.update(interactive=False)


def _unlock() -> Any:
    return gr.update(interactive=True)


def _steps_update(gen, sampler: str, studio: Studio) -> Any:
    """The steps slider for `sampler`: its range, default and label (hidden for one-pass models)."""
    lo, hi = step_range(gen, sampler, studio.limits)
    return gr.update(
        minimum=lo,
        maximum=hi,
        value=DEFAULT_STEPS[sampler],
        label=_steps_label(gen, sampler, studio),
        visible=not gen.one_pass,
    )


def _steps_label(gen, sampler: str | None, studio: Studio) -> str:
    if gen is None or sampler is None or gen.one_pass:
        return "Steps"
    lo, hi = step_range(gen, sampler, studio.limits)
    return f"Steps ({lo}-{hi} for {SAMPLER_LABELS[sampler]})"


def _as_int(value: Any, what: str) -> int:
    if value is None or isinstance(value, bool):
        raise StudioError(f"{what}: a whole number is required")
    f = float(value)
    if f != f or f in (float("inf"), float("-inf")) or f != int(f):
        raise StudioError(f"{what}: a whole number is required, got {value!r}")
    return int(f)


def _result_grid(result: Result):
    return face_grid(result.faces)


def _seen_line(result: Result) -> str:
    """The group classifier's view of the batch, next to the mix that was asked for."""
    if result.seen_groups is None:
        return ""
    seen = ", ".join(f"{g} {v:.0%}" for g, v in result.seen_groups.items() if v > 0)
    return f"  \nThe group classifier sees: {seen} (asked for the mix above)."


def _settings_line(settings: dict[str, Any]) -> str:
    mix = ", ".join(f"{k} {v:.0%}" for k, v in settings["mix"].items() if v > 0)
    return (
        f"{settings['model']} · {settings['sampler']} · {settings['steps']} steps · seed {settings['seed']} · "
        f"guidance {settings['guidance']:g} · {mix}"
    )


def _sampler_choices(gen) -> list[tuple[str, str]]:
    return [(SAMPLER_LABELS[s], s) for s in gen.samplers] if gen else []


def _default_sampler(gen) -> str | None:
    return gen.samplers[0] if gen else None


def launch(studio: Studio, host: str, port: int, block: bool = True) -> gr.Blocks:
    demo = build(studio)
    demo.queue(default_concurrency_limit=studio.limits.concurrency, max_size=studio.limits.max_queue)
    demo.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        ssr_mode=False,
        show_error=True,
        quiet=True,
        css=CSS,
        theme=gr.themes.Soft(),
        allowed_paths=[str(studio.out_dir)],
        footer_links=["api"],
    )
    return demo
