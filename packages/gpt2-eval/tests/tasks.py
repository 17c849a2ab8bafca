"""Local lm-eval tasks for the tests: the harness's own HellaSwag, PIQA and wikitext task configs (included
from the installed lm-eval) reading small json files written here, and a generation task; no network."""

from __future__ import annotations

import json
from pathlib import Path

HELLASWAG = [
    (
        "Baking bread",
        "A woman pours flour into a large bowl.",
        "she",
        0,
        [
            "adds water and kneads the dough on the counter.",
            "paints the bowl bright blue with a brush.",
            "throws the bowl into the swimming pool.",
            "reads a newspaper while riding a horse.",
        ],
    ),
    (
        "Washing a car",
        "A man sprays the side of a red car with a hose.",
        "he",
        2,
        [
            "eats a sandwich on the roof.",
            "climbs a tree in the park.",
            "scrubs the door with a soapy sponge.",
            "sings to the hose.",
        ],
    ),
    (
        "Playing guitar",
        "A boy sits on a stool holding a guitar.",
        "he",
        1,
        [
            "jumps into a lake.",
            "strums the strings and starts to sing.",
            "cooks pasta for dinner.",
            "paints his shoes green.",
        ],
    ),
    (
        "Running a marathon",
        "Runners line up at the start of a city race.",
        "the crowd",
        3,
        [
            "falls asleep on the grass.",
            "builds a sandcastle.",
            "orders a pizza.",
            "cheers as the runners set off down the street.",
        ],
    ),
    (
        "Brushing teeth",
        "A girl squeezes toothpaste onto a brush.",
        "she",
        0,
        [
            "brushes her teeth in front of the mirror.",
            "throws the brush out of the window.",
            "plants the brush in the garden.",
            "mails the brush to her aunt.",
        ],
    ),
    (
        "Mowing the lawn",
        "A man pushes a lawn mower across the yard.",
        "the mower",
        2,
        [
            "flies into the sky.",
            "starts to read a book.",
            "cuts the grass in neat rows.",
            "turns into a bicycle.",
        ],
    ),
]

PIQA = [
    (
        "To open a jar that is stuck,",
        "run the lid under hot water and twist.",
        "put the jar in the freezer overnight.",
        0,
    ),
    ("To keep bread fresh longer,", "leave it open on the counter.", "store it in a sealed bag.", 1),
    ("To dry wet shoes quickly,", "stuff them with newspaper.", "fill them with water.", 0),
    ("To cool a hot drink,", "add an ice cube.", "put it in the oven.", 0),
    ("To find a lost phone in the house,", "call it from another phone.", "buy a new house.", 0),
    ("To sharpen a pencil,", "use a pencil sharpener.", "use a spoon.", 0),
    ("To water a plant,", "pour water into the soil.", "pour sand onto the leaves.", 0),
    ("To make tea,", "steep a tea bag in hot water.", "steep a tea bag in cold sand.", 0),
]

PAGES = [
    " = Valkyria Chronicles = \n\n The game began development in 2010 , carrying over a large portion of the work "
    "done on Valkyria Chronicles II . While it retained the standard features of the series , it also underwent "
    "multiple adjustments , such as making the game more forgiving for series newcomers . \n",
    " = Tower Building = \n\n The Tower Building of the Little Rock Arsenal , also known as U.S. Arsenal Building , "
    "is a building located in MacArthur Park in downtown Little Rock , Arkansas . Built in 1840 , it was part of "
    "Little Rock 's first military installation . Since its decommissioning , The Tower Building has housed two "
    "museums . It was home to the Arkansas Museum of Natural History and Antiquities from 1942 to 1997 and the "
    "MacArthur Museum of Arkansas Military History since 2001 . It has also been the headquarters of the Little "
    "Rock Æsthetic Club since 1894 . \n",
    " = Short = \n\n A page of one line . \n",
]

QUESTIONS = [
    ("What is the capital of France?", "Paris"),
    ("How many legs does a spider have?", "eight"),
    ("What colour is the sky on a clear day?", "blue"),
    ("What do bees make?", "honey"),
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_tasks(root: Path) -> Path:
    """Write the data and the task YAMLs under ``root``; returns the folder for ``--include-path``."""
    import lm_eval

    installed = Path(lm_eval.__file__).parent / "tasks"
    data, tasks = root / "data", root / "tasks"
    data.mkdir(parents=True)
    tasks.mkdir(parents=True)
    hellaswag = _jsonl(
        data / "hellaswag.jsonl",
        [
            {
                "ind": i,
                "activity_label": a,
                "ctx_a": ca,
                "ctx_b": cb,
                "ctx": f"{ca} {cb}",
                "label": str(lab),
                "endings": e,
                "split": "val",
                "split_type": "indomain",
                "source_id": f"test~{i}",
            }
            for i, (a, ca, cb, lab, e) in enumerate(HELLASWAG)
        ],
    )
    piqa = _jsonl(
        data / "piqa.jsonl", [{"goal": g, "sol1": a, "sol2": b, "label": lab} for g, a, b, lab in PIQA]
    )
    pages = _jsonl(data / "wikitext.jsonl", [{"page": p} for p in PAGES])
    qa = _jsonl(data / "qa.jsonl", [{"question": q, "answer": a} for q, a in QUESTIONS])

    def local(name: str, base: Path, path: Path) -> str:
        return (
            f"include: {base}\ntask: {name}\ntag: []\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {path}\n"
            "training_split: null\nvalidation_split: validation\ntest_split: null\n"
        )

    (tasks / "hellaswag_local.yaml").write_text(
        local("hellaswag_local", installed / "hellaswag" / "hellaswag.yaml", hellaswag)
    )
    (tasks / "piqa_local.yaml").write_text(local("piqa_local", installed / "piqa" / "piqa.yaml", piqa))
    (tasks / "wikitext_local.yaml").write_text(
        local("wikitext_local", installed / "wikitext" / "wikitext.yaml", pages)
    )
    (tasks / "qa_local.yaml").write_text(
        "task: qa_local\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {qa}\n"
        "output_type: generate_until\nvalidation_split: validation\n"
        'doc_to_text: "Q: {{question}}\\nA:"\ndoc_to_target: "{{answer}}"\n'
        # "e" cuts most random texts, often inside a token: the stop strings are exercised.
        'generation_kwargs:\n  until: ["e", "\\n\\n"]\n  max_gen_toks: 12\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n"
    )
    # At the context's edge of a 64-token model: a generation task asking for 100 new tokens, and a
    # continuation of 100 tokens (" apple" is one token); lm-eval's hf refuses both.
    long = _jsonl(
        data / "long.jsonl", [{"question": q, "answer": " ".join(["apple"] * 100)} for q, _ in QUESTIONS]
    )
    (tasks / "qa_long_local.yaml").write_text(
        "include: qa_local.yaml\ntask: qa_long_local\n"
        'generation_kwargs:\n  until: ["\\n\\n"]\n  max_gen_toks: 100\n  do_sample: false\n'
    )
    (tasks / "long_answer_local.yaml").write_text(
        "task: long_answer_local\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {long}\n"
        "output_type: loglikelihood\nvalidation_split: validation\n"
        'doc_to_text: "Q: {{question}}\\nA:"\ndoc_to_target: " {{answer}}"\n'
        "metric_list:\n  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
        "metadata:\n  version: 1.0\n"
    )
    return tasks
