"""Zero-shot CLIP baselines: one hand-written template per dataset, or a prompt ensemble."""

from __future__ import annotations

from anchoropt.backbone import TextEncoder
from anchoropt.engine import TRAINER_REGISTRY
from anchoropt.models.clip_parts import ImageEncoder, scaled_logits
from anchoropt.models.zeroshot import class_text_features, templates_for
from trainers.base import ClipTrainer


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(ClipTrainer):
    """Nothing is trained: class features come from fixed prompts, computed once."""

    PREC_KEY = "TRAINER.COOP.PREC"
    IMAGE_ENCODER_FROZEN = True
    ENSEMBLE = False

    def build_model(self) -> None:
        clip_model = self.load_clip()
        self.templates = templates_for(self.cfg.DATASET.NAME, ensemble=self.ENSEMBLE)
        print(f"Prompt template(s): {self.templates}")
        self.image_encoder = ImageEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        with self.autocast():
            self.text_features = class_text_features(TextEncoder(clip_model), self.classnames, self.templates)

    def train(self) -> None:
        print("ZeroshotCLIP has nothing to train; evaluating")
        self.test()

    def model_inference(self, image):
        return scaled_logits(self.image_encoder(image), self.text_features, self.logit_scale)

    def frozen_image_encoder(self) -> ImageEncoder:
        return self.image_encoder

    def results_extras(self) -> dict:
        return {"templates": self.templates}


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """Prompt ensemble (CLIP's seven ImageNet templates plus the dataset's own)."""

    ENSEMBLE = True
