"""A small byte-level BPE tokenizer built in code, for backbones made without a pretrained directory.

No tokenizer can be downloaded here, so randomly initialised backbones (tiny test models and
full-size architectures alike) get this one: the 256 byte symbols, BPE merges learned from a short
built-in corpus of robot instructions, and the special tokens of the VLM family in front (ids 0..k-1,
in the order given). Byte-level means every string encodes, with no unknown token. It is wrapped in
transformers' fast tokenizer class, so it saves with `save_pretrained` and reloads with
`AutoTokenizer.from_pretrained` like any hub tokenizer.

    tok = build_tokenizer({"pad": "<pad>", "bos": "<s>", "eos": "</s>", "image": "<image>"})
    tok.pad_token_id, tok.image_token_id     # 0, 3
    tok("pick up the cube", add_special_tokens=False).input_ids

Roles "pad", "bos", "eos", "unk" become the tokenizer's standard special tokens; any other role R is
stored as the named special token `R_token` (so `tok.image_token`, `tok.image_token_id` exist).
"""

from __future__ import annotations

from collections.abc import Mapping

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

_STANDARD_ROLES = ("pad", "bos", "eos", "unk")

# Merges are learned from these lines: the vocabulary robot instructions use most.
_CORPUS = """
pick up the red cube and place it in the bowl
put the blue block on top of the green block
open the top drawer and put the spoon inside
close the drawer, then push the button
move the arm to the left of the table
grasp the handle and pull the door open
stack the yellow cup on the white plate
turn the knob clockwise until the light is on
wipe the table with the sponge
pour the water from the bottle into the glass
fold the towel in half and place it on the shelf
lift the box carefully and put it down on the right
slide the object towards the robot
insert the peg into the hole
rotate the gripper and release the object
go forward, stop, turn right, go back to the start
dig the soil with the bucket and dump it into the truck
walk to the door and wave the hand
what is in the image? describe the scene. where is the object?
""".strip().splitlines()


def build_tokenizer(special_tokens: Mapping[str, str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with `special_tokens` (role -> token text) at ids 0..k-1.

    `vocab_size` bounds the vocabulary (specials, bytes and merges); the built-in corpus supports a
    few hundred merges, so the result may be smaller. Deterministic: the same arguments give the
    same ids.
    """
    tokens = list(special_tokens.values())
    if len(set(tokens)) != len(tokens) or not all(isinstance(t, str) and t for t in tokens):
        raise ValueError(
            f"special_tokens must map roles to distinct non-empty strings, got {dict(special_tokens)}"
        )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(tokens) + len(alphabet):
        raise ValueError(
            f"vocab_size = {vocab_size} is too small: expected >= {len(tokens) + len(alphabet)} "
            f"({len(tokens)} special tokens + {len(alphabet)} byte symbols)"
        )
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=tokens, initial_alphabet=alphabet, show_progress=False
    )
    core.train_from_iterator(_CORPUS, trainer)

    standard = {f"{role}_token": tok for role, tok in special_tokens.items() if role in _STANDARD_ROLES}
    named = {f"{role}_token": tok for role, tok in special_tokens.items() if role not in _STANDARD_ROLES}
    return PreTrainedTokenizerFast(tokenizer_object=core, extra_special_tokens=named, **standard)


def token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """The id of one (special) token; a token the tokenizer does not know raises ValueError."""
    ids = tokenizer.convert_tokens_to_ids([token])
    if not ids or ids[0] is None or (ids[0] == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"the tokenizer has no token {token!r}; the VLM's prompt layout needs it")
    return int(ids[0])
