import sys, math, torch, numpy as np
from pathlib import Path
from engine.training.train import Trainer, CONFIGS, config_from_dict
torch.set_num_threads(1)
ck = sys.argv[1]
st = torch.load(ck, weights_only=False)
cfg = config_from_dict(st["config"])
tr = Trainer(cfg, Path("/tmp/x"), Path("data")); tr.load(Path(ck))
rng = np.random.default_rng(123); g = torch.Generator().manual_seed(3)
audio = tr.eval_src.batch(rng, 12, augment=False)
x0 = tr.transform.encode(audio); n = x0.shape[-1]
known = torch.ones(12, 1, n); known[..., n//3:2*n//3] = 0
from engine.models.builtin_net import SpectralContext
for which in ("net", "ema"):
    net = getattr(tr, which)
    for tv in (0.3, 0.6, 0.8, 0.95):
        t = torch.full((12,), tv); noise = torch.randn(x0.shape, generator=g)
        a = torch.cos(t*math.pi/2)[:,None,None]; s = torch.sin(t*math.pi/2)[:,None,None]
        xt = a*x0+s*noise; v = a*noise-s*x0
        with torch.no_grad():
            res = []
            for c in (SpectralContext(x0*known, known), None):
                out = torch.cat([net(xt[i:i+4], t[i:i+4], None if c is None else SpectralContext(c.latent[i:i+4], c.mask[i:i+4])) for i in range(0,12,4)])
                err = ((out - v)**2 * (1-known)).sum() / ((1-known).sum()*x0.shape[1])
                res.append(float(err))
        print(which, tv, "ctx %.4f  none %.4f" % tuple(res), flush=True)
