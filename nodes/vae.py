"""DC-AE (f32c32) decode and encode: OpenUni LATENT ⇄ ComfyUI IMAGE."""

from __future__ import annotations

from .common import CATEGORY, MODEL_TOOLTIP, MODEL_TYPE, crop_to_multiple, latent_samples, one_size_batch, require_model

TILING = {"auto": None, "on": True, "off": False}
TILING_TOOLTIP = ("Decode/encode in tiles to bound memory. auto: tiles above 1 megapixel (DC-AE's attention "
                  "blocks grow quickly with size); on/off force it.")


class OpenUniVAEDecode:
    DESCRIPTION = "Decodes OpenUni latents to images with the DC-AE f32c32 autoencoder."
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The decoded images.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": MODEL_TOOLTIP + " Its DC-AE decodes."}),
            "latent": ("LATENT", {"tooltip": "OpenUni latents from OpenUni Sampler or OpenUni VAE Encode."}),
            "tiling": (list(TILING), {"default": "auto", "tooltip": TILING_TOOLTIP}),
        }}

    def decode(self, model, latent, tiling="auto"):
        require_model(model)
        samples = latent_samples(latent)
        return (model.decode(samples, tiled=TILING.get(tiling)),)


class OpenUniVAEEncode:
    DESCRIPTION = ("Encodes images to OpenUni latents with DC-AE, for image-to-image with OpenUni Sampler. Sizes that "
                   "are not multiples of 32 are center-cropped to the nearest smaller multiple.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("OpenUni latents [batch, 32, height/32, width/32].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": MODEL_TOOLTIP + " Its DC-AE encodes."}),
            "image": ("IMAGE", {"tooltip": "Images to encode; center-cropped to multiples of 32 pixels."}),
            "tiling": (list(TILING), {"default": "auto", "tooltip": TILING_TOOLTIP}),
        }}

    def encode(self, model, image, tiling="auto"):
        require_model(model)
        images = crop_to_multiple(one_size_batch(image))
        return ({"samples": model.encode_images(images, tiled=TILING.get(tiling))},)
