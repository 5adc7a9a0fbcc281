# The two scikit-image SSIM values tests/sanity.rs holds viz::sanity::ssim to (SKIMAGE_XY,
# SKIMAGE_AFFINE), and scipy's Spearman of its tie example. Needs numpy, scipy, scikit-image:
#   python3 -m venv /tmp/sk && /tmp/sk/bin/pip install scikit-image scipy && /tmp/sk/bin/python scripts/golden/make_ssim_ref.py
# The planes are tests/common::seeded(5 | 6, 13*17) mapped to [0, 1), rewritten here in Python.
import numpy as np
from skimage.metrics import structural_similarity
M=(1<<64)-1
def seeded(seed,n):
    s=seed; out=[]
    for _ in range(n):
        s=(s+0x9E3779B97F4A7C15)&M
        z=s
        z=((z^(z>>30))*0xBF58476D1CE4E5B9)&M
        z=((z^(z>>27))*0x94D049BB133111EB)&M
        z^=z>>31
        out.append(np.float32(np.float32(z>>40)/np.float32(1<<23)-np.float32(1.0)))
    return np.array(out,dtype=np.float32)
h,w=13,17
x=((seeded(5,h*w)+np.float32(1))/np.float32(2)).astype(np.float32)
y=((seeded(6,h*w)+np.float32(1))/np.float32(2)).astype(np.float32)
aff=(np.float32(0.6)*x+np.float32(0.2)).astype(np.float32)
X=x.astype(np.float64).reshape(h,w); Y=y.astype(np.float64).reshape(h,w); A=aff.astype(np.float64).reshape(h,w)
kw=dict(gaussian_weights=True,sigma=1.5,use_sample_covariance=False,data_range=1.0)
print(repr(structural_similarity(X,Y,**kw)), repr(structural_similarity(X,A,**kw)))
import scipy.stats
print(scipy.stats.spearmanr([1,2,2,3],[10,20,30,40]).correlation)
