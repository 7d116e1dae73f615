"""Every user-facing choice, limit and default of the engine, in one place.

The CLI builds its flags and the ComfyUI nodes build their widgets from these names, and the engine's own
checks (`sampling.check_settings`, `chat.check_settings`, `devices`) use the same values, so a widget
never offers what the engine refuses (tests/test_house.py holds the nodes to this).
"""

from __future__ import annotations

# ----- loading --------------------------------------------------------------------------------------------
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
ATTENTION_KERNELS = ("auto", "sdpa", "flash_attention_2", "eager")
# Where the parts live between uses: "none" keeps every part on its device; "mllm" keeps InternVL3 in CPU RAM and
# streams it in layer by layer to encode; "sequential" does that for SANA and DC-AE too (whole, while they run).
MEMORY_POLICIES = ("none", "mllm", "sequential")

# ----- generation -----------------------------------------------------------------------------------------
SAMPLERS = {"dpmpp": "DPM-Solver++ multistep (the reference)", "euler": "flow-matching Euler (as in training)"}
DEFAULT_SAMPLER = "dpmpp"
SPATIAL_COMPRESSION = 32  # DC-AE f32c32: one latent cell per 32×32 pixels, so image sides are multiples of 32
LATENT_CHANNELS = 32
MIN_SIDE, MAX_SIDE = SPATIAL_COMPRESSION, 4096
MAX_STEPS, DEFAULT_STEPS = 1000, 20
MAX_CFG, DEFAULT_CFG = 100.0, 4.5
MAX_BATCH = 64
SEED_MAX, DEFAULT_SEED = 2**64 - 1, 42
DEFAULT_NEGATIVE = "Generate an image."  # the CFG text OpenUni was trained with
DEFAULT_EDIT_NEGATIVE = "Keep the image as it is."  # the reference's CFG instruction for image-conditioned generation
MAX_IMAGE_PIXELS = 8192 * 8192  # larger inputs are refused before any pixel is copied
# How much of an input image image-to-image re-draws when the user gives no strength/denoise: diffusers' img2img
# pipelines' default (StableDiffusionImg2ImgPipeline, strength=0.8).
DEFAULT_STRENGTH = 0.8
DEFAULT_VARIANT = "OpenUni-B-512"  # the smallest released variant: what a models folder is assumed to hold

# ----- understanding --------------------------------------------------------------------------------------
DEFAULT_QUESTION = "Please describe the image in detail."
MAX_TILES, DEFAULT_MAX_TILES = 40, 12  # InternVL3 itself uses up to 12 tiles of 448×448
MAX_NEW_TOKENS, DEFAULT_MAX_NEW_TOKENS = 8192, 512
MAX_TEMPERATURE = 5.0
DEFAULT_TEMPERATURE, DEFAULT_CAPTION_SEED = 0.0, 0  # greedy: the same answer every time
GREEDY_BELOW = 0.01  # logits / temperature overflow below this; such a temperature means greedy anyway
SAMPLING_TOP_K = 50  # InternVL's chat samples with transformers' defaults: the 50 likeliest tokens (top_p 1.0)

# Our own instructions (the node tooltips quote them). Caption presets: name → the question asked; the custom
# preset asks the question text instead (one question per line), as the Caption node always did.
CUSTOM_QUESTION = "custom question"
CAPTION_PRESETS = {
    "detailed caption": DEFAULT_QUESTION,
    "short caption": "Describe the image in one short sentence.",
    "comma-separated tags": ("List what is in the image as comma-separated tags: the subjects, objects, setting, "
                             "colors, lighting and style, each a word or a short phrase, with no sentences."),
    "text in the image (OCR)": ("Read all the text in the image and write it out exactly as it appears, line by line. "
                                "If there is no text, answer: no text."),
    CUSTOM_QUESTION: None,
}
DEFAULT_CAPTION_PRESET = CUSTOM_QUESTION  # what saved workflows without a preset did
ENHANCE_INSTRUCTION = (
    "Rewrite the idea below as one detailed prompt for a text-to-image model. Keep everything the idea asks for and "
    "add concrete visual detail: the subject and what it does, the setting, the composition and camera view, the "
    "lighting, colors, materials and the style. Write a single paragraph of at most 80 words in plain descriptive "
    "language, without any preamble, list or quotation marks.")
ENHANCE_WITH_IMAGE = ("Take the subject, composition, colors and style of the image where the idea does not say "
                      "otherwise.")
DEFAULT_ENHANCE_MAX_NEW_TOKENS = 160
ANSWER_CACHE_SIZE = 256  # greedy answers kept per loaded model (text only: a few hundred KB at most)
# Work per batched generate, bounding memory: rows of the LLM batch, and 448×448 tiles per vision-tower forward.
MAX_CHAT_ROWS, MAX_VISION_TILES = 16, 48
