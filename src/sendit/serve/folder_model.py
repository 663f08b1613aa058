"""What every loaded model folder does alike, torch (SenditModel) or ONNX (OnnxModel): its classes, the encoding
of texts as the model was trained (normalisation, max length) and `predict`'s dicts. Each subclass gives
`manifest`, `tokenizer` and `predict_proba`."""

from __future__ import annotations


class FolderModel:
    manifest: dict
    tokenizer: object

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names in id order (run.json's and the config's id2label; older folders: negative/positive)."""
        return tuple(self.manifest.get("labels") or ("negative", "positive"))

    def encode(self, texts: list[str]):
        # imported here: loading an ONNX folder needs no torch until it encodes
        from sendit.data.dataset import normalize_tweet
        from sendit.train.batching import encode

        if self.manifest.get("normalize", True):
            texts = [normalize_tweet(t) for t in texts]
        return encode(self.tokenizer, texts, None, int(self.manifest.get("max_length", 128)))

    def predict(self, texts: list[str], batch_size: int = 256) -> list[dict]:
        """One dict per text: label (the class id; 0 = negative, 1 = positive for a binary model), label_name, and
        prob_positive for a binary model, else one prob_<name> per class."""
        from sendit.data.labels import label_dicts

        return label_dicts(self.predict_proba(texts, batch_size).probs, self.classes)
