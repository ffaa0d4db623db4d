"""The 3DGAN networks: shapes, architecture numbers, the losses of paper eq. (1)."""

import pytest
import torch

from calofast.models import ModelConfigError, get_family
from calofast.models.gan3d import Gan3D, Gan3DConfig, _disc_features, generator_input, losses, mape


def test_generator_lands_on_51x51x25_and_discriminator_outputs():
    cfg = Gan3DConfig()
    model = Gan3D(cfg)
    z = generator_input(torch.randn(3, 254), torch.tensor([10.0, 100.0, 450.0]), torch.tensor([1.1, 1.6, 2.0]), cfg)
    assert z.shape == (3, 256) and torch.allclose(z[:, 0], torch.tensor([0.1, 1.0, 4.5]))
    img = model.generator(z)
    assert img.shape == (3, 51, 51, 25) and (img >= 0).all()
    out = model.discriminator(img)
    assert set(out) == {"fake", "energy", "ecal", "angle"}
    assert all(v.shape == (3,) for v in out.values())
    assert ((out["fake"] > 0) & (out["fake"] < 1)).all()
    assert torch.allclose(out["ecal"], img.pow(1 / 0.85).sum(dim=(1, 2, 3)), rtol=1e-5)
    assert 8 * _disc_features(cfg) == 19152


def test_architecture_numbers():
    g = Gan3D(Gan3DConfig()).generator
    assert g.dense.out_features == 5184
    assert g.conv1.kernel_size == (6, 6, 8) and g.conv7.out_channels == 1
    assert [c.kernel_size for c in g.convs] == [(4, 4, 6)] * 3
    assert g.bn1.eps == 1e-6
    with pytest.raises(ValueError, match="dense_units 5000 must equal"):
        Gan3DConfig(dense_units=5000)
    with pytest.raises(ModelConfigError, match="unknown model type 'vae'"):
        get_family("vae")


def test_losses_follow_paper_equation_1():
    cfg = Gan3DConfig()
    out = {
        "fake": torch.tensor([0.5, 0.5]),
        "energy": torch.tensor([1.1, 2.0]),
        "angle": torch.tensor([1.5, 1.7]),
        "ecal": torch.tensor([2.2, 4.0]),
    }
    t = losses(out, torch.ones(2), torch.tensor([1.0, 2.0]), torch.tensor([1.6, 1.6]), torch.tensor([2.0, 4.0]), cfg)
    assert t["gan"].item() == pytest.approx(3 * -torch.log(torch.tensor(0.5)).item(), rel=1e-6)
    assert t["energy"].item() == pytest.approx(0.1 * 100 * (0.1 + 0) / 2, rel=1e-6)  # Keras MAPE in percent
    assert t["angle"].item() == pytest.approx(25 * 0.1, rel=1e-5)
    assert t["ecal"].item() == pytest.approx(0.1 * 100 * 0.05, rel=1e-6)
    assert t["total"].item() == pytest.approx(sum(t[k].item() for k in ("gan", "energy", "angle", "ecal")))
    assert mape(torch.tensor([0.0]), torch.tensor([0.0])).item() == 0.0
