"""The ``pyromem`` command.

    pyromem demo [--quick] [--out DIR] [--json]
    pyromem train vae --dataset digits [--epochs N ...] [--out DIR] [--json]
    pyromem train vma --mode recall|learned|fewshot --address enum|vimco|soft [...] [--json]
    pyromem train kpp --dataset digits --episode-length T --reads K [--baselines] [--json]
    pyromem eval vae|vma|kpp --checkpoint PATH [--out DIR] [--json]
    pyromem retrieval --dataset patches [--methods ...] [--memory-size 100] [--seeds 10]
                      [--capacity] [--out DIR] [--json]
    pyromem compare-guides --model vae|memory-vae [--steps T ...] [--out DIR] [--json]

Every command writes ``results.json`` and figures to ``--out``; with ``--json``
it prints one JSON object on stdout and sends progress to stderr.
"""

import argparse
import contextlib
import json
import sys
import warnings

DEFAULT_OUT = {
    "demo": "pyromem-demo",
    "train": "runs/{model}-{dataset}",
    "eval": "runs/eval",
    "retrieval": "runs/retrieval-{dataset}",
    "compare-guides": "runs/compare-guides-{model}",
}


def _add_common(parser, out_default):
    parser.add_argument("--out", default=out_default, help="folder for results.json and figures")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--seed", type=int, default=0)


def _add_engine(parser):
    parser.add_argument("--accelerator", default="auto", help="auto, cpu, gpu")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto", help="auto or ddp")
    parser.add_argument("--gradient-clip", type=float, default=None, dest="gradient_clip_val")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--no-progress", action="store_false", dest="progress")


def _add_data(parser):
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--root", default=None, help="data folder of torchvision datasets")
    parser.add_argument("--download", action="store_true", help="let torchvision download")
    parser.add_argument("--size", type=int, default=None, help="resize images to SIZE×SIZE")
    parser.add_argument(
        "--binarize",
        default="dynamic",
        choices=["none", "static", "dynamic"],
        help="binarisation of grey-scale data (ignored for colour data)",
    )


def build_parser():
    parser = argparse.ArgumentParser(prog="pyromem", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the main job: every recipe, with a report")
    demo.add_argument("--quick", action="store_true", help="a run of under 2 minutes")
    demo.add_argument("--no-progress", action="store_false", dest="progress")
    _add_common(demo, DEFAULT_OUT["demo"])

    train = commands.add_parser("train", help="train a model")
    train_models = train.add_subparsers(dest="model", required=True)
    vae = train_models.add_parser("vae", help="the VAE with a standard-normal prior")
    _add_data(vae)
    vae.add_argument("--epochs", type=int, default=20)
    vae.add_argument("--latent-dim", type=int, default=16)
    vae.add_argument(
        "--likelihood", default=None, help="bernoulli, gaussian, discretized_logistic_mixture"
    )
    vae.add_argument("--net", default="mlp", choices=["mlp", "conv"])
    vae.add_argument("--hidden", type=int, nargs="+", default=[400])
    vae.add_argument("--batch-size", type=int, default=128)
    vae.add_argument("--lr", type=float, default=1e-3)
    vae.add_argument("--num-samples", type=int, default=1000, help="K of the IWAE-K test bound")
    vae.add_argument("--num-particles", type=int, default=10, help="draws of the test ELBO")
    _add_engine(vae)
    _add_common(vae, None)

    vma = train_models.add_parser("vma", help="variational memory addressing (Bornschein et al.)")
    vma.add_argument("--mode", default="recall", choices=["recall", "learned", "fewshot"])
    vma.add_argument(
        "--address",
        default="enum",
        choices=["enum", "vimco", "soft"],
        help="enumerated or VIMCO-sampled address, or soft: the soft-attention baseline (§4.2)",
    )
    vma.add_argument("--memory-size", type=int, default=None, help="|M| (recall, learned)")
    vma.add_argument("--steps", type=int, default=None, help="gradient steps (recall, fewshot)")
    vma.add_argument("--epochs", type=int, default=20, help="epochs (learned)")
    vma.add_argument("--batch-size", type=int, default=32)
    vma.add_argument("--num-particles", type=int, default=4, help="K of VIMCO")
    vma.add_argument("--latent-dim", type=int, default=16)
    vma.add_argument("--embedding-dim", type=int, default=64)
    vma.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    vma.add_argument("--similarity", default="normalized", choices=["normalized", "dot", "cosine"])
    vma.add_argument("--prior", default="learned", choices=["learned", "flat"])
    vma.add_argument("--classes", type=int, default=8, help="C classes per few-shot episode")
    vma.add_argument("--shots", type=int, default=4, help="S shots per class")
    vma.add_argument("--queries", type=int, default=4, help="targets per class")
    vma.add_argument("--size", type=int, default=None, help="image side")
    vma.add_argument("--lr", type=float, default=1e-3)
    vma.add_argument("--num-samples", type=int, default=1000, help="K of the test NLL")
    vma.add_argument("--accelerator", default="auto", help="auto, cpu, gpu")
    vma.add_argument("--no-progress", action="store_false", dest="progress")
    _add_common(vma, None)

    kpp = train_models.add_parser("kpp", help="Kanerva++ (Ramapuram et al.)")
    _add_data(kpp)
    kpp.add_argument("--episode-length", type=int, default=8, help="T images per episode")
    kpp.add_argument("--reads", type=int, default=2, help="K block reads per image")
    kpp.add_argument(
        "--same-class", action="store_true", help="episodes of images of one class each"
    )
    kpp.add_argument(
        "--key-scale",
        type=float,
        default=None,
        help="the key that moves a block read by tanh(1) of its range (default 3)",
    )
    kpp.add_argument("--baselines", action="store_true", help="also the VAE and dense write")
    kpp.add_argument(
        "--encoder",
        default="conv",
        choices=["conv", "resnet18-tsm"],
        help="f_enc: a conv stack, or the paper's ResNet-18 with temporal shift",
    )
    kpp.add_argument(
        "--encoder-width",
        type=int,
        default=None,
        help="width of the first stage of resnet18-tsm (default 64)",
    )
    kpp.add_argument("--epochs", type=int, default=20)
    kpp.add_argument("--latent-dim", type=int, default=16)
    kpp.add_argument("--batch-size", type=int, default=16, help="episodes per step")
    kpp.add_argument("--lr", type=float, default=1e-3)
    kpp.add_argument("--num-samples", type=int, default=100, help="K of the IWAE-K test bound")
    kpp.add_argument("--num-particles", type=int, default=10, help="draws of the test ELBO")
    _add_engine(kpp)
    _add_common(kpp, None)

    evaluate = commands.add_parser("eval", help="evaluate a trained model")
    eval_models = evaluate.add_subparsers(dest="model", required=True)
    for name, help_text, num_samples in (
        ("vae", "a VAE checkpoint", 1000),
        ("vma", "a VMA checkpoint", 1000),
        ("kpp", "a Kanerva++ checkpoint", 100),
    ):
        checkpoint = eval_models.add_parser(name, help=help_text)
        checkpoint.add_argument("--checkpoint", required=True)
        checkpoint.add_argument("--num-samples", type=int, default=num_samples, help="K")
        if name != "vma":
            checkpoint.add_argument("--root", default=None)
            checkpoint.add_argument("--num-particles", type=int, default=10)
        _add_common(checkpoint, DEFAULT_OUT["eval"])

    retrieval = commands.add_parser(
        "retrieval", help="the associative-retrieval benchmark (Annabi et al. 2022, Tables 2-4)"
    )
    retrieval.add_argument("--dataset", default="patches", help="patches, digits or shapes")
    retrieval.add_argument(
        "--methods", nargs="+", default=None, help="GMM Hopfield NTM MemN2N VAE-GMM ... VAE-GMM*"
    )
    retrieval.add_argument(
        "--corruptions",
        nargs="+",
        default=None,
        help="clean noise-0.6 mask-16 ... (default: those of Tables 2-4 for the image size)",
    )
    retrieval.add_argument("--memory-size", type=int, default=100, help="N stored patterns")
    retrieval.add_argument("--seeds", type=int, default=10, help="memories per table cell")
    retrieval.add_argument(
        "--selection-seeds", type=int, default=2, help="train-split memories per candidate"
    )
    retrieval.add_argument("--checkpoint", default=None, help="a VAE checkpoint to load")
    retrieval.add_argument("--vae-epochs", type=int, default=60)
    retrieval.add_argument("--capacity", action="store_true", help="run the sweep of App. E.4")
    retrieval.add_argument(
        "--capacity-sizes", type=int, nargs="+", default=None, help="N of the sweep"
    )
    retrieval.add_argument("--no-progress", action="store_false", dest="progress")
    _add_common(retrieval, None)

    compare = commands.add_parser(
        "compare-guides", help="amortised, iterative and hybrid guides of one model side by side"
    )
    compare.add_argument("--model", default="vae", choices=["vae", "memory-vae"])
    compare.add_argument("--dataset", default="digits")
    compare.add_argument("--epochs", type=int, default=30)
    compare.add_argument("--latent-dim", type=int, default=8)
    compare.add_argument("--hidden", type=int, nargs="+", default=[128])
    compare.add_argument("--memory-size", type=int, default=50, help="N patterns (memory-vae)")
    compare.add_argument("--num-test", type=int, default=100, help="test images compared")
    compare.add_argument("--num-samples", type=int, default=500, help="K of IWAE-K and PSIS")
    compare.add_argument("--num-particles", type=int, default=10, help="draws of each ELBO")
    compare.add_argument("--steps", type=int, default=20, help="T of the refinements")
    compare.add_argument("--lr", type=float, default=0.05, help="rate of the refinements")
    compare.add_argument("--iterative-steps", type=int, default=200, help="training steps")
    compare.add_argument("--progress", action="store_true")
    _add_common(compare, None)
    return parser


def run(args):
    """Run a parsed command and return its results dict."""
    import pyro

    pyro.set_rng_seed(args.seed)
    if args.command == "demo":
        from pyromem.experiments.demo import run_demo

        return run_demo(args.out, quick=args.quick, seed=args.seed, progress=args.progress)
    if args.command == "retrieval":
        return _run_retrieval(args)
    if args.command == "compare-guides":
        return _compare_guides(args)
    if args.command == "train":
        # VMA's settings are named by mode, the others' by dataset
        label = args.mode if args.model == "vma" else args.dataset
        args.out = args.out or DEFAULT_OUT["train"].format(model=args.model, dataset=label)
        return {"vae": _train_vae, "vma": _train_vma, "kpp": _train_kpp}[args.model](args)
    return _evaluate(args)


def _data_and_engine_options(args):
    # the options of _add_data and _add_engine, as the recipes name them
    return {
        "dataset": args.dataset,
        "binarize": None if args.binarize == "none" else args.binarize,
        "size": args.size,
        "root": args.root,
        "download": args.download,
        "resume": args.resume,
        "accelerator": args.accelerator,
        "devices": args.devices,
        "strategy": args.strategy,
        "gradient_clip_val": args.gradient_clip_val,
        "progress": args.progress,
    }


def _train_vae(args):
    from pyromem.experiments.vae import train_vae

    return train_vae(
        out_dir=args.out,
        epochs=args.epochs,
        latent_dim=args.latent_dim,
        likelihood=args.likelihood,
        net=args.net,
        hidden=tuple(args.hidden),
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        num_samples=args.num_samples,
        num_particles=args.num_particles,
        **_data_and_engine_options(args),
    )


def _train_vma(args):
    from pyromem.experiments.vma import train_vma

    return train_vma(
        out_dir=args.out,
        mode=args.mode,
        address=args.address,
        memory_size=args.memory_size,
        steps=args.steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        num_particles=args.num_particles,
        latent_dim=args.latent_dim,
        embedding_dim=args.embedding_dim,
        hidden=tuple(args.hidden),
        similarity=args.similarity,
        prior=args.prior,
        classes=args.classes,
        shots=args.shots,
        queries=args.queries,
        size=args.size,
        lr=args.lr,
        seed=args.seed,
        num_samples=args.num_samples,
        accelerator=args.accelerator,
        progress=args.progress,
    )


def _train_kpp(args):
    from pyromem.experiments.kpp import train_kpp

    return train_kpp(
        out_dir=args.out,
        episode_length=args.episode_length,
        reads=args.reads,
        same_class=args.same_class,
        key_scale=args.key_scale,
        baselines=args.baselines,
        encoder=args.encoder,
        encoder_width=args.encoder_width,
        epochs=args.epochs,
        latent_dim=args.latent_dim,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        num_samples=args.num_samples,
        num_particles=args.num_particles,
        **_data_and_engine_options(args),
    )


def _evaluate(args):
    if args.model == "vma":
        from pyromem.experiments.vma import evaluate_vma

        return evaluate_vma(args.checkpoint, out_dir=args.out, num_samples=args.num_samples)
    if args.model == "kpp":
        from pyromem.experiments.kpp import evaluate_kpp as evaluate
    else:
        from pyromem.experiments.vae import evaluate_checkpoint as evaluate
    return evaluate(
        args.checkpoint,
        out_dir=args.out,
        num_samples=args.num_samples,
        num_particles=args.num_particles,
        root=args.root,
    )


def _run_retrieval(args):
    from pyromem.experiments import retrieval
    from pyromem.retrieval import format_table

    args.out = args.out or DEFAULT_OUT["retrieval"].format(dataset=args.dataset)
    options = {}
    if args.methods:
        options["capacity_methods" if args.capacity else "methods"] = args.methods
    if args.capacity_sizes:
        options["capacity_sizes"] = args.capacity_sizes
    results = retrieval.run_retrieval(
        args.out,
        dataset=args.dataset,
        corruptions=args.corruptions,
        memory_size=args.memory_size,
        seeds=args.seeds,
        selection_seeds=args.selection_seeds,
        checkpoint=args.checkpoint,
        vae_epochs=args.vae_epochs,
        capacity=args.capacity,
        seed=args.seed,
        progress=args.progress,
        log=lambda line: print(line, file=sys.stderr),
        **options,
    )
    # The table goes to stdout, which main() sends to stderr when stdout carries the JSON.
    if not args.capacity:
        print(retrieval.markdown_tables(results))
    else:
        sweep = results["capacity"]
        rows = {
            name: dict(zip(map(str, sweep["sizes"]), cells, strict=True))
            for name, cells in sweep["results"].items()
        }
        print(format_table(rows))
    return results


def _compare_guides(args):
    from pyromem.experiments.compare_guides import run_compare_guides

    args.out = args.out or DEFAULT_OUT["compare-guides"].format(model=args.model)
    results = run_compare_guides(
        args.out,
        model=args.model,
        dataset=args.dataset,
        epochs=args.epochs,
        latent_dim=args.latent_dim,
        hidden=tuple(args.hidden),
        memory_size=args.memory_size,
        num_test=args.num_test,
        num_samples=args.num_samples,
        num_particles=args.num_particles,
        steps=args.steps,
        lr=args.lr,
        iterative_steps=args.iterative_steps,
        seed=args.seed,
        progress=args.progress,
    )
    # to stderr when stdout carries the JSON (main redirects it)
    print(results["table"])
    return results


def main(argv=None):
    """Entry point of the ``pyromem`` console script."""
    args = build_parser().parse_args(argv)
    # deprecation notices of our dependencies' internals are not the user's business
    warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")
    try:
        # with --json, stdout carries the one JSON object and nothing else
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            results = run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"pyromem: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results))
    else:
        print(f"results written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
