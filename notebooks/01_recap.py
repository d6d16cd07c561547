# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1 · Recap
#
# This notebook follows the **RECAP** part of the lecture *CNN Architectures*: the basic
# layer types (fully connected, convolution, max-pooling), the non-linearities (sigmoid and
# ReLU), optimisation by gradient descent, and deep learning as a differentiable
# computational graph.
#
# You will:
#
# 1. push one real Fashion-MNIST image through a fully connected, a convolution and a
#    max-pooling layer, and count their outputs and parameters;
# 2. see what a convolution filter does to an image, with hand-made filters and with the
#    filters a trained ResNet-20 learned;
# 3. compare sigmoid and ReLU and their gradients, and see why the sigmoid saturates;
# 4. check the first-order Taylor expansion behind gradient descent, and run gradient descent;
# 5. backpropagate through a small graph by hand and compare with PyTorch's autograd.
#
# Everything runs on the data and weights that ship with cnnzoo (no download).
# Runs in about 15 s on 2 CPU cores.

# %%
import itertools
import shutil

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import Image, display
from torch import nn

import cnnzoo
from cnnzoo.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist_mini
from cnnzoo.experiments.gradients import gradient_norms
from cnnzoo.explain.features import feature_maps, first_filters
from cnnzoo.summary import summarize
from cnnzoo.viz.graph import draw_graph

torch.set_num_threads(1)  # small batches: one thread is as fast, and other processes on
# the same cores cannot stall it (two threads waiting for each other can be 10x slower)
torch.manual_seed(0)
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# The bundled mini Fashion-MNIST: 5,000 training and 1,000 test images (28x28, grey, 10
# classes), a balanced real subset that ships inside the package. We pick one test image, an
# ankle boot, and scale it to $[0, 1]$.

# %%
train_images, train_labels = load_fashion_mnist_mini("train")
test_images, test_labels = load_fashion_mnist_mini("test")
print("train:", tuple(train_images.shape), train_images.dtype, " test:", tuple(test_images.shape))

idx = int((test_labels == FASHION_MNIST_CLASSES.index("Ankle boot")).nonzero()[0])
x = test_images[idx : idx + 1].float() / 255  # (N, C, H, W) = (1, 1, 28, 28)
print(f"test image {idx}: {FASHION_MNIST_CLASSES[int(test_labels[idx])]}, shape {tuple(x.shape)}")

fig, ax = plt.subplots(figsize=(2.6, 2.6))
ax.imshow(x[0, 0], cmap="gray")
ax.set_title(f"{FASHION_MNIST_CLASSES[int(test_labels[idx])]} (28x28)")
ax.axis("off")
plt.show()

# %% [markdown]
# ## Basic layer types
#
# - **Fully connected**: every output is a weighted sum of *all* inputs,
#   $y = Wx + b$. From $n$ inputs to $m$ outputs: $nm + m$ parameters.
# - **Convolution**: a small filter of $k \times k$ weights slides over the image; the same
#   weights are used at every position (*weight sharing*) and each output sees only a
#   $k \times k$ neighbourhood (*local connectivity*). $C_{in} \to C_{out}$ channels:
#   $C_{out}(C_{in}k^2 + 1)$ parameters, whatever the image size. The output side is
#   $H_{out} = \lfloor (H + 2p - k)/s \rfloor + 1$ for padding $p$ and stride $s$.
# - **Max-pooling**: the maximum of each $2 \times 2$ window (stride 2): half the height and
#   width, no parameters.

# %%
fc = nn.Linear(28 * 28, 10)
conv = nn.Conv2d(1, 8, kernel_size=3, padding=1)
pool = nn.MaxPool2d(2)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


print(f"fully connected: {tuple(x.flatten(1).shape)} -> {tuple(fc(x.flatten(1)).shape)}, "
      f"{n_params(fc)} parameters = 784*10 + 10")  # fmt: skip
print(f"convolution 3x3: {tuple(x.shape)} -> {tuple(conv(x).shape)}, "
      f"{n_params(conv)} parameters = 8*(1*3*3) + 8")  # fmt: skip
print(f"max-pooling 2x2: {tuple(conv(x).shape)} -> {tuple(pool(conv(x)).shape)}, "
      f"{n_params(pool)} parameters")  # fmt: skip
dense_same = 28 * 28 * (8 * 28 * 28) + 8 * 28 * 28
print(f"a fully connected layer with the convolution's 8x28x28 outputs: {dense_same:,} parameters")

# %% [markdown]
# The output-size formula, checked against PyTorch for a few kernel sizes, strides and
# paddings on the 28x28 image:

# %%
for k, s, p in [(3, 1, 0), (3, 1, 1), (5, 1, 2), (3, 2, 1), (7, 2, 3), (2, 2, 0)]:
    measured = nn.Conv2d(1, 1, k, stride=s, padding=p)(x).shape[-1]
    formula = (28 + 2 * p - k) // s + 1
    print(f"k={k} s={s} p={p}: formula {formula:2d}, PyTorch {measured:2d}")

# %% [markdown]
# A tiny CNN made of these layers, summarised by cnnzoo's `summarize` (the function behind
# `cnnzoo info`): the output shape, parameters and multiply-accumulates (MACs) of each layer.
# The convolution has few parameters but many MACs (its 80 weights are used at every one of
# the 784 positions); the final fully connected layer is the opposite.

# %%
tiny = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(8 * 14 * 14, 10),
)  # fmt: skip
print(f"{'layer':<6} {'kind':<10} {'output shape':<16} {'params':>8} {'MACs':>8}")
for row in summarize(tiny, (1, 28, 28)):
    shape = str(row.output_shape)
    print(f"{row.name:<6} {row.kind:<10} {shape:<16} {row.params:>8,} {row.macs:>8,}")

# %% [markdown]
# Max-pooling on a 4x4 example: each 2x2 window keeps its largest value.

# %%
small = torch.tensor([[1.0, 3, 2, 0], [4, 2, 1, 1], [0, 1, 5, 6], [2, 2, 7, 1]])
print(small)
print(F.max_pool2d(small[None, None], 2)[0, 0])

# %% [markdown]
# ## What a convolution filter does
#
# Four hand-made 3x3 filters: vertical and horizontal edge detectors (Sobel), a blur (box)
# and a Laplacian (spots and thin lines). The convolution output is large where the image
# locally looks like the filter: the vertical-edge map lights up on the boot's left and
# right sides, with opposite signs for dark-to-bright and bright-to-dark. ReLU keeps the
# positive responses, and max-pooling halves the resolution while keeping the strongest one.

# %%
filters = {
    "vertical edge": [[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "horizontal edge": [[-1.0, -2, -1], [0, 0, 0], [1, 2, 1]],
    "blur": [[1 / 9] * 3] * 3,
    "Laplacian": [[0.0, 1, 0], [1, -4, 1], [0, 1, 0]],
}
kernels = torch.tensor(list(filters.values())).unsqueeze(1)  # (4 out, 1 in, 3, 3)
responses = F.conv2d(x, kernels, padding=1)[0]  # (4, 28, 28)
pooled = F.max_pool2d(F.relu(responses), 2)  # (4, 14, 14)

fig, axes = plt.subplots(2, 5, figsize=(12, 5.6), layout="constrained")
axes[0, 0].imshow(x[0, 0], cmap="gray")
axes[0, 0].set_title("input 28x28")
axes[1, 0].axis("off")
for i, name in enumerate(filters):
    r = responses[i]
    lim = float(r.abs().max())
    axes[0, i + 1].imshow(r, cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[0, i + 1].set_title(f"{name}\nconv 28x28", fontsize=10)
    axes[1, i + 1].imshow(pooled[i], cmap="magma")
    axes[1, i + 1].set_title("ReLU + max-pool 14x14", fontsize=10)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("hand-made 3x3 filters (red: positive, blue: negative response)")
plt.show()

# %% [markdown]
# A trained network learns its filters instead of being given them. The first convolution
# of the shipped `resnet20.fmnist` (ResNet-20 trained on the full Fashion-MNIST, 0.9365 test
# accuracy) has 16 filters of 3x3; `cnnzoo.explain`'s `first_filters` and `feature_maps`
# read them and their responses to our boot (the images are normalised as in training first).
# Several are edge detectors of some orientation, others respond to bright or dark regions:
# the [gallery](../docs/gallery.md#what-the-layers-learn) shows the same for plain-20 and
# ResNet-20 trained by the `what-layers-learn` experiment.

# %%
r20 = cnnzoo.create_model("resnet20", weights="resnet20.fmnist").eval()
prep = cnnzoo.weights.get("resnet20.fmnist").preprocessing
print("preprocessing:", prep.describe())
x_norm = (x - prep.mean[0]) / prep.std[0]
name, w = first_filters(r20)
maps = feature_maps(r20, x_norm, "stem").maps  # after conv, BN and ReLU
print(f"first convolution {name!r}: weights {tuple(w.shape)}; stem output {tuple(maps.shape)}")

fig, axes = plt.subplots(4, 8, figsize=(12, 7), layout="constrained")
for i in range(16):
    ax_w = axes[2 * (i // 8), i % 8]
    ax_m = axes[2 * (i // 8) + 1, i % 8]
    lim = float(w[i].abs().max())
    ax_w.imshow(w[i, 0], cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax_w.set_title(f"filter {i}", fontsize=9)
    ax_m.imshow(maps[i], cmap="magma")
    ax_m.set_title(f"response {i}", fontsize=9)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("resnet20.fmnist: the 16 learned 3x3 filters and their responses (stem output)")
plt.show()

# %% [markdown]
# ## Non-linearities: sigmoid vs ReLU
#
# Without a non-linearity between them, stacked linear layers collapse into one linear
# layer. The lecture's two:
#
# - **logistic (sigmoid)** $\sigma(z) = 1/(1+e^{-z})$, with
#   $\sigma'(z) = \sigma(z)(1-\sigma(z)) \le 1/4$;
# - **ReLU** $\max(0, z)$, with derivative 1 for $z > 0$ and 0 for $z < 0$.
#
# The derivatives below are computed by autograd, not by the formulas.

# %%
z = torch.linspace(-6, 6, 241, requires_grad=True)
sig, relu = torch.sigmoid(z), torch.relu(z)
(d_sig,) = torch.autograd.grad(sig.sum(), z)
(d_relu,) = torch.autograd.grad(relu.sum(), z)
zs = z.detach()

fig, axes = plt.subplots(2, 2, figsize=(9, 5.6), sharex=True)
panels = [
    (axes[0, 0], sig, "sigmoid $\\sigma(z)$", "C0"),
    (axes[1, 0], d_sig, "its derivative $\\sigma'(z)$ (max 1/4)", "C0"),
    (axes[0, 1], relu, "ReLU $\\max(0, z)$", "C3"),
    (axes[1, 1], d_relu, "its derivative (0 or 1)", "C3"),
]
for ax, values, title, colour in panels:
    ax.plot(zs, values.detach(), color=colour, linewidth=2)
    ax.set_title(title)
    ax.grid(alpha=0.3)
for ax in axes[1]:
    ax.set_xlabel("pre-activation $z$")
axes[0, 0].set_ylabel("output")
axes[1, 0].set_ylabel("gradient")
axes[1, 0].axhspan(0, 0.01, color="grey", alpha=0.25)
axes[1, 0].text(-5.8, 0.03, "saturated: $\\sigma' < 0.01$", fontsize=9)
fig.tight_layout()
plt.show()

for v in (0.0, 2.0, 5.0):
    s = torch.sigmoid(torch.tensor(v))
    print(f"sigma'({v:.0f}) = sigma (1 - sigma) = {float(s * (1 - s)):.4f}")

# %% [markdown]
# **Why the sigmoid saturates:** for $|z|$ beyond about 5 its derivative is below 0.01, so
# a unit pushed far to one side passes almost no gradient back. And even at its best
# ($z = 0$) it multiplies the gradient by 1/4: by the chain rule, the gradient reaching the
# first of $n$ sigmoid layers carries a product of $n$ such factors. ReLU passes the gradient
# unchanged wherever the unit is active.

# %%
for n in (1, 5, 10, 20, 56):
    print(f"{n:2d} sigmoid layers: gradient factor at most (1/4)^{n} = {0.25**n:.1e}")

# %% [markdown]
# Measured on a real batch: a 10-layer fully connected network (width 64, the same
# He-normal initial weights for both), once with sigmoid and once with ReLU. cnnzoo's
# `gradient_norms` (the function behind the `vanishing-gradients` experiment) runs one
# forward/backward pass and returns the norm of each layer's weight gradient, input side
# first.


# %%
def mlp(activation: type[nn.Module], depth: int = 10, width: int = 64) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()]
    sizes = [28 * 28] + [width] * (depth - 1)
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), activation()]
    layers.append(nn.Linear(width, 10))
    for m in layers:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


batch_x = (train_images[:64].float() / 255 - prep.mean[0]) / prep.std[0]
batch_y = train_labels[:64]
DEPTH = 10
norms = {
    act.__name__: gradient_norms(mlp(act, DEPTH), batch_x, batch_y) for act in (nn.Sigmoid, nn.ReLU)
}

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, (label, colour) in zip(axes, [("Sigmoid", "C0"), ("ReLU", "C3")], strict=True):
    values = list(norms[label].values())
    ax.semilogy(range(1, len(values) + 1), values, marker="o", color=colour)
    ax.set_title(f"{DEPTH}-layer MLP, {label}")
    ax.set_xlabel("layer (1 = input side)")
    ax.grid(alpha=0.3, which="both")
axes[0].set_ylabel("weight-gradient L2 norm")
fig.tight_layout()
plt.show()
for label, n in norms.items():
    v = list(n.values())
    print(f"{label:7s}: first layer {v[0]:.2e}, last layer {v[-1]:.2e}, ratio {v[0] / v[-1]:.1e}")

# %% [markdown]
# With the sigmoid the gradient shrinks by orders of magnitude towards the input: the lower
# layers barely learn. This is the lecture's *vanishing gradient*; notebook 2 measures it in
# 20- and 56-layer CNNs and shows how skip connections (ResNet) deal with it.
#
# ## Optimisation: gradient descent
#
# Training means finding $\boldsymbol{\theta}^* = \operatorname{argmin}_{\boldsymbol{\theta}}
# J(\boldsymbol{\theta})$. Near a point $\boldsymbol{\theta}_0$ the lecture's first-order
# Taylor expansion approximates the loss by a plane:
#
# $$J(\boldsymbol{\theta}) \cong J(\boldsymbol{\theta}_0) + (\boldsymbol{\theta} -
# \boldsymbol{\theta}_0)^T \nabla J(\boldsymbol{\theta}_0).$$
#
# The step $\boldsymbol{\theta} = \boldsymbol{\theta}_0 - \eta \nabla J(\boldsymbol{\theta}_0)$
# then lowers the loss by about $\eta \lVert \nabla J(\boldsymbol{\theta}_0) \rVert^2$: the
# negative gradient is the direction of steepest descent. The approximation only holds for
# small steps. We check it on the fully connected classifier from above
# ($784 \to 10$, softmax, cross-entropy) on the 5,000 training images.

# %%
X = (train_images.float().flatten(1) / 255 - prep.mean[0]) / prep.std[0]
Y = train_labels
X_test = (test_images.float().flatten(1) / 255 - prep.mean[0]) / prep.std[0]


def loss_fn(theta: torch.Tensor) -> torch.Tensor:
    W, b = theta[:, :-1], theta[:, -1]
    return F.cross_entropy(X @ W.T + b, Y)


torch.manual_seed(0)
theta0 = (0.01 * torch.randn(10, 28 * 28 + 1)).requires_grad_()
J0 = loss_fn(theta0)
(g,) = torch.autograd.grad(J0, theta0)
theta0, J0 = theta0.detach(), J0.detach()
print(f"J(theta0) = {float(J0):.4f}, |grad J(theta0)|^2 = {float(g.pow(2).sum()):.4f}")
etas = torch.logspace(-3, 1, 25)
actual = torch.stack([loss_fn(theta0 - eta * g) for eta in etas]).detach()
linear = J0 - etas * g.pow(2).sum()
for eta, a, lin in list(zip(etas, actual, linear, strict=True))[::4]:
    print(f"eta = {float(eta):7.4f}: J after the step {a.item():.4f}, Taylor {float(lin):8.4f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
axes[0].semilogx(etas, actual, "o-", color="C0", label="true $J(\\theta_0 - \\eta g)$")
axes[0].semilogx(etas, linear, "--", color="C1", label="first-order Taylor")
axes[0].set_ylim(float(actual.min()) - 0.5, float(J0) + 0.5)
axes[0].set_title("loss after one gradient step")
axes[0].set_xlabel("step size $\\eta$")
axes[0].set_ylabel("loss")
axes[0].legend()
axes[1].loglog(etas, (actual - linear).abs(), "o-", color="C2")
axes[1].set_title("error of the linear approximation")
axes[1].set_xlabel("step size $\\eta$")
axes[1].set_ylabel("|true - Taylor|")
for ax in axes:
    ax.grid(alpha=0.3, which="both")
fig.tight_layout()
plt.show()

# %% [markdown]
# For small steps the plane is exact to three or four digits, and its error grows as
# $\eta^2$ (slope 2 in the log-log panel: the second-order term the expansion drops). For
# large steps the plane predicts an ever lower loss while the true loss turns back up: the
# step size (learning rate) must be small enough for the local picture to hold.
#
# The same trade-off on a 2-D loss we can draw, $J(\theta) = \frac{1}{2}(\theta_1^2 +
# 10\,\theta_2^2)$: too small a step crawls, a good one converges, and above
# $\eta = 2/10$ (2 over the largest curvature) the steep direction overshoots and diverges.


# %%
def descend(eta: float, steps: int = 20) -> torch.Tensor:
    theta = torch.tensor([-4.5, 1.5])
    path = [theta]
    for _ in range(steps):
        theta = theta - eta * torch.tensor([1.0, 10.0]) * theta  # grad J = (theta1, 10 theta2)
        path.append(theta)
    return torch.stack(path)


t1, t2 = torch.meshgrid(torch.linspace(-5, 5, 200), torch.linspace(-4.5, 4.5, 200), indexing="xy")
bowl = 0.5 * (t1**2 + 10 * t2**2)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
for ax, eta, colour in zip(axes, (0.02, 0.15, 0.205), ("C0", "C2", "C3"), strict=True):
    path = descend(eta)
    ax.contour(t1, t2, bowl, levels=12, colors="grey", linewidths=0.6)
    ax.plot(path[:, 0], path[:, 1], "o-", color=colour, ms=3)
    final = 0.5 * (path[-1, 0] ** 2 + 10 * path[-1, 1] ** 2)
    ax.set_title(f"$\\eta$ = {eta}: J after 20 steps = {float(final):.2g}")
    ax.set_ylim(-4.5, 4.5)
    ax.set_xlabel("$\\theta_1$")
axes[0].set_ylabel("$\\theta_2$")
fig.tight_layout()
plt.show()

# %% [markdown]
# Finally a real gradient-descent run: the fully connected classifier, full-batch gradient
# descent on the 5,000 training images, 200 steps of $\eta = 0.05$, starting from the same
# $\boldsymbol{\theta}_0$. Test accuracy on the 1,000 test images.

# %%
theta = theta0.clone().requires_grad_()
eta = 0.05
history = []
for step in range(201):
    J = loss_fn(theta)
    (grad,) = torch.autograd.grad(J, theta)
    if step % 40 == 0:
        with torch.no_grad():
            W, b = theta[:, :-1], theta[:, -1]
            acc = float(((X_test @ W.T + b).argmax(1) == test_labels).float().mean())
        print(f"step {step:3d}: training loss {J.item():.4f}, test accuracy {acc:.3f}")
    history.append(J.item())
    with torch.no_grad():
        theta -= eta * grad

fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(history, color="C0")
ax.set_xlabel("gradient-descent step")
ax.set_ylabel("training loss")
ax.set_title("fully connected classifier, full-batch GD")
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# A single fully connected layer reaches about 0.82 here; the shipped convolutional
# `resnet20.fmnist` reaches 0.9365 on the full test set. Deep networks are trained with the
# same rule, on mini-batches (stochastic gradient descent) and with momentum.
#
# ## Deep learning as a differentiable computational graph
#
# A network is a graph of simple differentiable operations. The forward pass computes each
# node from its inputs; the backward pass (backpropagation) applies the chain rule node by
# node, from the loss back to every parameter. The smallest example: one sigmoid neuron with
# a squared error,
#
# $$z = \mathbf{w}^T\mathbf{x} + b,\quad a = \sigma(z),\quad L = (a - y)^2.$$
#
# By hand: $\frac{\partial L}{\partial a} = 2(a-y)$, $\frac{\partial a}{\partial z} =
# a(1-a)$, $\frac{\partial z}{\partial \mathbf{w}} = \mathbf{x}$,
# $\frac{\partial z}{\partial b} = 1$, multiplied along the path.

# %%
xv = torch.tensor([0.5, -1.0, 2.0])
w = torch.tensor([0.3, 0.8, -0.2], requires_grad=True)
b = torch.tensor(0.1, requires_grad=True)
y = torch.tensor(1.0)

zv = w @ xv + b
a = torch.sigmoid(zv)
L = (a - y) ** 2
L.backward()
print(f"forward: z = {zv.item():.4f}, a = {a.item():.4f}, L = {L.item():.4f}")

dl_da = 2 * (a - y)
da_dz = a * (1 - a)
dl_dz = dl_da * da_dz
print(
    f"by hand:  dL/da = {dl_da.item():.4f}, da/dz = {da_dz.item():.4f}, dL/dz = {dl_dz.item():.4f}"
)
print("by hand:  dL/dw =", (dl_dz * xv).detach(), " dL/db =", round(dl_dz.item(), 4))
print("autograd: dL/dw =", w.grad, " dL/db =", round(float(b.grad), 4))


def show_graph(fn: object, depth: int = 0) -> None:
    """Print the backward graph autograd recorded, from the loss down to the leaves."""
    if fn is None:
        return
    print("  " * depth + type(fn).__name__)
    for child, _ in fn.next_functions:
        show_graph(child, depth + 1)


print("\nthe graph autograd recorded (read from the loss down; AccumulateGrad = a parameter):")
show_graph(L.grad_fn)

# %% [markdown]
# Now a real network: a two-layer perceptron ($784 \to 32 \to 10$, ReLU, softmax
# cross-entropy) on a batch of 32 Fashion-MNIST images. Backpropagation by hand in matrix
# form — $\delta_2 = (\mathrm{softmax}(\mathbf{o}) - \mathbf{y}_{onehot})/N$,
# $\nabla W_2 = \delta_2^T \mathbf{h}$, $\delta_1 = (\delta_2 W_2) \odot [\mathbf{u} > 0]$,
# $\nabla W_1 = \delta_1^T \mathbf{x}$ — against autograd.

# %%
torch.manual_seed(0)
xb, yb = X[:32], Y[:32]
W1 = (0.05 * torch.randn(32, 784)).requires_grad_()
b1 = torch.zeros(32, requires_grad=True)
W2 = (0.05 * torch.randn(10, 32)).requires_grad_()
b2 = torch.zeros(10, requires_grad=True)

u = xb @ W1.T + b1  # hidden pre-activation
h = torch.relu(u)
o = h @ W2.T + b2  # logits
loss = F.cross_entropy(o, yb)
loss.backward()

with torch.no_grad():
    d2 = (torch.softmax(o, 1) - F.one_hot(yb, 10).float()) / len(yb)
    grads_by_hand = {"W2": d2.T @ h, "b2": d2.sum(0)}
    d1 = (d2 @ W2) * (u > 0).float()
    grads_by_hand |= {"W1": d1.T @ xb, "b1": d1.sum(0)}
for name, p in {"W1": W1, "b1": b1, "W2": W2, "b2": b2}.items():
    diff = float((grads_by_hand[name] - p.grad).abs().max())
    print(f"{name}: shape {tuple(p.shape)!s:10} max |by hand - autograd| = {diff:.1e}")

# %% [markdown]
# The two agree to float32 rounding. Autograd does exactly this, for any graph: every cnnzoo
# model is such a graph, only with more nodes. `cnnzoo info NAME --graph FILE` draws one
# (torchview + Graphviz); here LeNet-5, the first CNN of the classification notebook, with
# the tensor shape on every edge.

# %%
if shutil.which("dot"):
    lenet = cnnzoo.create_model("lenet5", num_classes=10, in_channels=1)
    png = draw_graph(lenet, (1, 1, 28, 28), "lenet5_graph.png", depth=1, overwrite=True)
    display(Image(filename=str(png), width=260))
else:
    print("Graphviz's `dot` is not installed: `cnnzoo info lenet5 --graph lenet5.svg` needs it")

# %% [markdown]
# ## Exercises
#
# 1. **Stride and padding.** In the *basic layer types* cell, build
#    `nn.Conv2d(1, 8, kernel_size=5, stride=2, padding=0)` instead of the 3x3 convolution and
#    re-run it and the output-size cell. What output shape do you predict from
#    $\lfloor (H + 2p - k)/s \rfloor + 1$, and how many parameters? Does the parameter count
#    depend on the stride or on the image size? Why not?
# 2. **Design a filter.** In the filter cell, add a diagonal-edge filter
#    (e.g. `[[0, 1, 2], [-1, 0, 1], [-2, -1, 0]]`) to `filters` (make the figure 6 columns
#    wide). On which parts of the boot does it respond, and which of the 16 learned
#    `resnet20.fmnist` filters looks most like it?
# 3. **Saturation.** In the MLP gradient cell, set `DEPTH = 4` and then `DEPTH = 20`. How
#    does the first-layer/last-layer gradient ratio of the sigmoid network change with depth?
#    Compare with the bound $(1/4)^n$ printed above: why is the measured decay per layer
#    different from exactly 1/4?
# 4. **Step size.** In the gradient-descent run, try $\eta$ = 0.01, 0.2 and 1.0 instead of
#    0.05. Which reaches the lowest training loss after 200 steps, and which makes the loss
#    go up and down? Relate what you see to the Taylor plot: up to which $\eta$ did a single
#    step still lower the loss, and why can a step size that is fine at the start become too
#    large later?
