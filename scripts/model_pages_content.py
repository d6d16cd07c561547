"""What the annotated model pages show: for each lecture architecture, the lecture's slide
text, the paper's equations and the classes and functions of ``src/cnnzoo`` that implement
them (``scripts/model_pages.py`` reads the code itself from the source).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One class, method (``Class.method``), function or constant of a file under src/cnnzoo."""

    file: str
    name: str
    note: str = ""


@dataclass(frozen=True)
class Section:
    """One architecture: the paper, the lecture's slide (title, then its lines), equations
    as (LaTeX, what it says), and the parts of the code."""

    title: str
    paper: str
    lecture: tuple[str, ...]
    equations: tuple[tuple[str, str], ...]
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Page:
    slug: str
    title: str
    intro: str
    sections: tuple[Section, ...]


CLASSIFICATION = Page(
    "classification",
    "Annotated: image classification",
    "The lecture's classifiers, each beside the code that builds it. The left column is the "
    "code's own docstring; the numbers in bold refer to the equations above the code. Train "
    "any of them with `cnnzoo train NAME`; the measured results are on the "
    "[classification page](../classification.md).",
    (
        Section(
            "The task: a class per image",
            "The loss every classifier here minimises (cross-entropy)",
            (
                "Image classification — task definition",
                "We can minimize: NLL, cross-entropy, KL divergence.",
            ),
            ((r"L(y) = -\log p(y \mid \theta)", "the negative log-likelihood of the true class"),),
            (),
        ),
        Section(
            "AlexNet",
            "Krizhevsky, Sutskever, Hinton, ImageNet Classification with Deep CNNs, NIPS 2012",
            (
                "Typical architectures – AlexNet & VGG",
                "AlexNet and VGG represent the *prototypical* image classification architectures.",
                "They consist of a **feature extractor** and some **decision layers** on top.",
                "The feature extractor gradually reduces the height / width while increasing "
                "the level of abstraction.",
            ),
            (
                (r"f(x) = \max(0, x)", "ReLU, the non-linearity AlexNet made standard"),
                (
                    r"W_{out} = \left\lfloor \frac{W_{in} - K + 2P}{S} \right\rfloor + 1",
                    "a convolution's (and pooling's) output size: kernel K, padding P, stride S",
                ),
            ),
            (
                Part("models/classification/alexnet.py", "_conv", "Convolution + ReLU (1)."),
                Part(
                    "models/classification/alexnet.py",
                    "_overlapping_pool",
                    "3x3 windows with stride 2: the pooling windows overlap (2).",
                ),
                Part("models/classification/alexnet.py", "AlexNet"),
            ),
        ),
        Section(
            "VGG",
            "Simonyan, Zisserman, Very Deep Convolutional Networks, ICLR 2015",
            (),
            (
                (
                    r"2 \cdot (3^2 C^2) = 18C^2 \;<\; 5^2 C^2 = 25C^2",
                    "two stacked 3x3 convolutions see 5x5 pixels with fewer weights than one "
                    "5x5 (and one more non-linearity)",
                ),
            ),
            (
                Part(
                    "models/classification/vgg.py",
                    "VGG_CONFIGS",
                    "The paper's Table 1 as strings: numbers are 3x3 convolutions, M a max-pool.",
                ),
                Part("models/classification/vgg.py", "VGG.__init__"),
            ),
        ),
        Section(
            "GoogLeNet",
            "Szegedy et al., Going Deeper with Convolutions, CVPR 2015",
            (
                "Block based architectures – GoogLeNet",
                "GoogLeNet is a good example of a modularized CNN architecture.",
                "Each module computes multiple convolution types.",
                "The loss is computed at **multiple levels** for stronger gradients.",
            ),
            (
                (
                    r"y = [\,B_{1\times1}(x),\; B_{3\times3}(x),\; B_{5\times5}(x),\;"
                    r" B_{pool}(x)\,]",
                    "the Inception module: four branches concatenated along the channels",
                ),
                (
                    r"L = L_{main} + 0.3\,(L_{aux,1} + L_{aux,2})",
                    "the auxiliary classifiers add their loss during training only",
                ),
            ),
            (
                Part("layers/inception.py", "Inception", "The module of (1)."),
                Part("models/classification/googlenet.py", "InceptionAux", "A head of (2)."),
                Part("models/classification/googlenet.py", "GoogLeNet.forward"),
            ),
        ),
        Section(
            "ResNet",
            "He, Zhang, Ren, Sun, Deep Residual Learning for Image Recognition, CVPR 2016",
            (
                "Block based architectures – ResNet",
                "ResNet tackles vanishing gradients by adding **skip connections** between "
                "modules.",
                "The output of each **residual block** is an **additive transformation** of "
                "the input.",
                "The residual block with **bottleneck** reduces the number of parameters -> "
                "we can get even deeper models.",
            ),
            (
                (r"y = \mathcal{F}(x, \{W_i\}) + x", "a residual block: identity shortcut"),
                (
                    r"y = \mathcal{F}(x, \{W_i\}) + W_s x",
                    "a projection shortcut where the shape changes (option B)",
                ),
                (
                    r"\frac{\partial L}{\partial x} = \frac{\partial L}{\partial y}"
                    r"\left(1 + \frac{\partial \mathcal{F}}{\partial x}\right)",
                    "why it trains: the gradient always has a path through the identity",
                ),
            ),
            (
                Part("layers/residual.py", "_ResidualBlock", "(1) and (2) in `forward`."),
                Part("layers/residual.py", "BasicBlock"),
                Part("layers/residual.py", "Bottleneck", "1x1 down, 3x3, 1x1 up."),
                Part("layers/residual.py", "ProjectionShortcut", "The W_s of (2)."),
                Part("models/classification/resnet.py", "ResNet._make_stage"),
            ),
        ),
        Section(
            "MobileNet and ShuffleNet",
            "Howard et al. 2017; Sandler et al. 2018; Zhang et al. 2018; Ma et al. 2018",
            (
                "Optimizing for embedded — some methods",
                "Filter design optimization: reduce the number of necessary operations (use "
                "1x1 filters or depthwise convolution filters) (MobileNet, ShuffleNet).",
            ),
            (
                (
                    r"\frac{D_K^2 M D_F^2 + M N D_F^2}{D_K^2 M N D_F^2}"
                    r" = \frac{1}{N} + \frac{1}{D_K^2}",
                    "the cost of a depthwise-separable convolution over a standard one "
                    "(kernel D_K, M in and N out channels, D_F x D_F map): about 1/9 for 3x3",
                ),
            ),
            (
                Part("layers/mobile.py", "DepthwiseSeparableConv", "MobileNet v1's block (1)."),
                Part("layers/mobile.py", "InvertedResidual", "MobileNet v2's block."),
                Part("layers/mobile.py", "channel_shuffle"),
                Part("models/classification/shufflenet.py", "ShuffleV2Unit"),
            ),
        ),
    ),
)

SEGMENTATION = Page(
    "segmentation",
    "Annotated: semantic segmentation",
    "The lecture's segmenters, from the naive patch-wise classifier to U-Net, each beside its "
    "code (the left column is the code's own docstring). Measured results: the "
    "[segmentation page](../segmentation.md).",
    (
        Section(
            "The task: a class per pixel",
            "The per-pixel loss every segmenter here minimises",
            (
                "Semantic segmentation — task definition",
                "Semantic segmentation -> per-pixel classification -> **we can use similar "
                "loss functions**.",
            ),
            (
                (
                    r"L = -\frac{1}{HW} \sum_{i=1}^{HW} \log p(y_i \mid \theta)",
                    "the mean negative log-likelihood of every pixel's true class",
                ),
            ),
            (),
        ),
        Section(
            "Patch-wise classification (the naive approach)",
            "Farabet et al., TPAMI 2013; Pinheiro, Collobert, ICML 2014",
            (
                "Semantic segmentation — naive approach",
                "Classify a patch around every pixel: one forward pass per pixel.",
            ),
            (),
            (Part("models/segmentation/patchwise.py", "PatchwiseSegmenter"),),
        ),
        Section(
            "Encoder-decoder and the transposed convolution",
            "Noh, Hong, Han, Learning Deconvolution Network, ICCV 2015",
            (
                "Semantic segmentation — better approach",
                "Design a network as a bunch of convolutional layers, with **downsampling** "
                "and **upsampling** inside the network.",
                "Transposed convolution upsamples its input; it is parameterized, therefore "
                "it can be trained.",
                "**Feature extractor -> can be pre-trained on image classification.**",
            ),
            (
                (
                    r"W_{out} = (W_{in} - 1)\,S - 2P + K",
                    "a transposed convolution's output size (stride S, padding P, kernel K)",
                ),
            ),
            (
                Part("models/segmentation/encdec.py", "EncoderDecoder"),
                Part(
                    "layers/upsample.py",
                    "bilinear_kernel",
                    "The transposed convolution's starting point: bilinear interpolation.",
                ),
            ),
        ),
        Section(
            "FCN",
            "Long, Shelhamer, Darrell, Fully Convolutional Networks for Semantic "
            "Segmentation, CVPR 2015",
            ("Semantic segmentation — simplest architecture", "FCN-32s, 16s and 8s."),
            (
                (
                    r"S_{8s} = \mathrm{up}_{8}\big(\mathrm{up}_2(\mathrm{up}_2(s_{32}) + s_{16})"
                    r" + s_{8}\big)",
                    "FCN-8s: the coarse scores upsampled and summed with scores from the "
                    "stride-16 and stride-8 features (the skips)",
                ),
            ),
            (
                Part("models/segmentation/fcn.py", "crop_to"),
                Part("models/segmentation/fcn.py", "FCN"),
            ),
        ),
        Section(
            "SegNet",
            "Badrinarayanan, Kendall, Cipolla, SegNet, TPAMI 2017",
            (
                "Semantic segmentation — better architectures",
                "The decoder upsamples with the max-pooling indices of the encoder.",
            ),
            (),
            (
                Part("models/segmentation/segnet.py", "MaxPoolEncoder"),
                Part("models/segmentation/segnet.py", "MaxUnpoolDecoder"),
                Part("models/segmentation/segnet.py", "SegNet.forward"),
            ),
        ),
        Section(
            "PSPNet",
            "Zhao et al., Pyramid Scene Parsing Network, CVPR 2017",
            ("Semantic segmentation — better architectures", "Pyramid pooling module."),
            (
                (
                    r"P(X) = \big[\,X,\; \mathrm{up}(\mathrm{conv}_{1\times1}"
                    r"(\mathrm{pool}_b(X)))_{b \in \{1,2,3,6\}}\,\big]",
                    "the pyramid pooling module: the map, concatenated with its averages over "
                    "1x1, 2x2, 3x3 and 6x6 bins, each reduced and upsampled back",
                ),
            ),
            (
                Part("layers/pyramid.py", "PyramidPooling", "(1)."),
                Part("models/segmentation/pspnet.py", "PSPNet.forward"),
            ),
        ),
        Section(
            "U-Net",
            "Ronneberger, Fischer, Brox, U-Net, MICCAI 2015",
            (),
            (
                (
                    r"d_l = \mathrm{conv}\big(\,[\,\mathrm{up}(d_{l+1}),\; e_l\,]\,\big)",
                    "each level of the expanding path: the upsampled map concatenated with "
                    "the contracting path's map of the same size",
                ),
            ),
            (
                Part("models/segmentation/unet.py", "DoubleConv"),
                Part("models/segmentation/unet.py", "UNetUp", "(1)."),
                Part("models/segmentation/unet.py", "UNet.forward"),
            ),
        ),
    ),
)

DETECTION = Page(
    "detection",
    "Annotated: object detection",
    "The lecture's detectors, from the sliding window to the one-pass YOLO and SSD, each "
    "beside its code (the left column is the code's own docstring). Measured results: the "
    "[detection page](../detection.md).",
    (
        Section(
            "The task: boxes and their classes",
            "The compound loss of the lecture",
            (
                "Object detection — task definition",
                "Object detection -> predict **bounding boxes** and the **associated classes** "
                "-> compound loss function.",
            ),
            (
                (
                    r"L(y_c, y_{coord}) = \alpha L_c(y_c) + \beta L_{coord}(y_{coord})",
                    "a classification term and a box-regression term, weighted",
                ),
                (
                    r"\mathrm{IoU}(A, B) = \frac{|A \cap B|}{|A \cup B|}",
                    "how boxes are compared: matching, non-maximum suppression, mAP",
                ),
            ),
            (
                Part(
                    "models/detection/postprocess.py",
                    "postprocess",
                    "Score threshold, then non-maximum suppression per class with (2).",
                ),
            ),
        ),
        Section(
            "Sliding window (the naive approach)",
            "Sermanet et al., OverFeat, ICLR 2014",
            (
                "Object detection — naive approach",
                "Apply a CNN to many different crops of the image; the CNN classifies each "
                "crop as object or background.",
                "Problem: need to apply the CNN to a huge number of locations, scales and "
                "aspect ratios, very computationally expensive!",
            ),
            (),
            (Part("models/detection/sliding_window.py", "SlidingWindowDetector.forward"),),
        ),
        Section(
            "Fast R-CNN",
            "Girshick, Fast R-CNN, ICCV 2015",
            (
                "Object detection — better approach: only classify some proposals",
                "Independently processing each cropped feature block is very costly.",
            ),
            (
                (
                    r"L(p, u, t^u, v) = L_{cls}(p, u) + \lambda\,[u \ge 1]\,L_{loc}(t^u, v)",
                    "the multi-task loss: class u's log loss, and a smooth-L1 box loss for "
                    "foreground RoIs only",
                ),
                (
                    r"t_x = \frac{G_x - P_x}{P_w},\; t_y = \frac{G_y - P_y}{P_h},\;"
                    r" t_w = \log\frac{G_w}{P_w},\; t_h = \log\frac{G_h}{P_h}",
                    "the box targets: the ground truth G relative to the proposal P",
                ),
            ),
            (
                Part("models/detection/fast_rcnn.py", "pool_rois", "RoI pooling: one pass."),
                Part("models/detection/proposals.py", "encode_boxes", "(2)."),
                Part("models/detection/fast_rcnn.py", "FastRCNN.loss", "(1)."),
            ),
        ),
        Section(
            "YOLO",
            "Redmon, Farhadi, YOLOv3: An Incremental Improvement, 2018",
            (
                "Bounding box parameterization in YOLO",
                "[c_x, c_y]: coordinates of the current cell (integers).",
                "[σ(t_x), σ(t_y)]: the predicted box centre, relative to the current cell.",
                "[b_w, b_h]: the predicted box width and height, relative to the anchor box.",
                "[p_w, p_h]: width and height of the anchor / base box.",
            ),
            (
                (
                    r"b_x = \sigma(t_x) + c_x,\quad b_y = \sigma(t_y) + c_y,\quad"
                    r" b_w = p_w e^{t_w},\quad b_h = p_h e^{t_h}",
                    "decoding the network's outputs t into a box (in grid cells)",
                ),
                (
                    r"d(\mathrm{box}, \mathrm{centroid}) = 1 - \mathrm{IoU}(\mathrm{box},"
                    r" \mathrm{centroid})",
                    "the anchors p: k-means on the training boxes with this distance",
                ),
            ),
            (
                Part("models/detection/coders.py", "yolo_decode", "(1)."),
                Part("models/detection/anchors.py", "kmeans_anchors", "(2)."),
                Part("models/detection/yolov3.py", "YOLOv3.forward"),
            ),
        ),
        Section(
            "SSD",
            "Liu et al., SSD: Single Shot MultiBox Detector, ECCV 2016",
            (
                "One pass detectors – YOLO / SSD",
                "A set of **base boxes** centred at each grid cell.",
                "Regress from each of the B base boxes to a final box; predict scores for "
                "each of C classes (including background as a class).",
            ),
            (
                (
                    r"s_k = s_{min} + \frac{s_{max} - s_{min}}{m - 1}(k - 1),\quad k \in [1, m]",
                    "the default boxes' scale on the k-th of m feature maps",
                ),
                (
                    r"\hat g^{cx} = \frac{g^{cx} - d^{cx}}{d^w},\quad"
                    r" \hat g^{w} = \log\frac{g^w}{d^w}",
                    "the regression targets: ground truth g relative to default box d",
                ),
            ),
            (
                Part("models/detection/ssd.py", "ssd_scales", "(1)."),
                Part("models/detection/coders.py", "ssd_encode", "(2)."),
                Part("models/detection/ssd.py", "hard_negative_mask"),
            ),
        ),
    ),
)

GENERATIVE = Page(
    "generative",
    "Annotated: autoencoders and generative models",
    "The lecture's autoencoders, VAE and GANs, each beside its code (the left column is the "
    "code's own docstring). Measured results: the [autoencoders](../autoencoders.md) and "
    "[generative models](../generative.md) pages.",
    (
        Section(
            "Autoencoder",
            "Hinton, Salakhutdinov, Science 2006; Masci et al., ICANN 2011",
            (
                "Autoencoders — overview",
                "They do not require labels (**unsupervised learning**).",
                "Based on information bottleneck (compression).",
                "Also great for **pre-training** segmentation, classification or detection "
                "networks.",
            ),
            (
                (
                    r"\min_{f, g}\; \lVert x - g(f(x)) \rVert^2",
                    "encoder f, decoder g: reconstruct the input through a small code",
                ),
            ),
            (
                Part("models/generative/autoencoder.py", "ConvEncoder"),
                Part("models/generative/autoencoder.py", "ConvDecoder"),
                Part("models/generative/autoencoder.py", "ConvAutoencoder.loss", "(1)."),
            ),
        ),
        Section(
            "Variational autoencoder",
            "Kingma, Welling, Auto-Encoding Variational Bayes, ICLR 2014",
            (
                "Generative architectures — Variational Autoencoder (VAE)",
                "Maximize the evidence lower bound (below).",
            ),
            (
                (
                    r"\mathbb{E}_z\left[\log p_\theta(x^{(i)} \mid z)\right]"
                    r" - D_{KL}\big(q_\phi(z \mid x^{(i)}) \,\|\, p_\theta(z)\big)",
                    "the ELBO: reconstruction minus the code's distance from the prior",
                ),
                (
                    r"z = \mu + \sigma \odot \epsilon,\quad \epsilon \sim \mathcal{N}(0, I)",
                    "the reparameterisation trick: sampling that gradients pass through",
                ),
                (
                    r"D_{KL} = -\tfrac12 \sum_j \left(1 + \log\sigma_j^2 - \mu_j^2"
                    r" - \sigma_j^2\right)",
                    "the KL term in closed form for a Gaussian q and a unit-Gaussian prior",
                ),
            ),
            (
                Part("models/generative/vae.py", "kl_divergence", "(3)."),
                Part("models/generative/vae.py", "VAE.reparameterize", "(2)."),
                Part("models/generative/vae.py", "VAE.loss", "(1)."),
            ),
        ),
        Section(
            "GAN and DCGAN",
            "Goodfellow et al., NeurIPS 2014; Radford, Metz, Chintala, ICLR 2016",
            ("Generative architectures — Generative Adversarial Network (GAN)",),
            (
                (
                    r"\min_G \max_D\; \mathbb{E}_{x \sim p_{data}}[\log D(x)]"
                    r" + \mathbb{E}_{z \sim p_z}[\log(1 - D(G(z)))]",
                    "the two-player game between generator G and discriminator D",
                ),
            ),
            (
                Part("models/generative/dcgan.py", "DCGANGenerator"),
                Part("models/generative/dcgan.py", "DCGANDiscriminator"),
                Part("models/generative/dcgan.py", "DCGAN.discriminator_step", "max over D."),
                Part("models/generative/dcgan.py", "DCGAN.generator_step", "min over G."),
            ),
        ),
        Section(
            "pix2pix and pix2pixHD",
            "Isola et al., CVPR 2017; Wang et al., CVPR 2018",
            ("Generative architectures — GAN (image-to-image translation, pix2pixHD)",),
            (
                (
                    r"G^* = \arg\min_G \max_D\; \mathcal{L}_{cGAN}(G, D)"
                    r" + \lambda\, \mathbb{E}\,\lVert y - G(x) \rVert_1",
                    "pix2pix: a conditional GAN plus an L1 term towards the paired target",
                ),
            ),
            (
                Part("models/generative/pix2pix.py", "UNetGenerator"),
                Part("models/generative/pix2pix.py", "Pix2Pix.generator_step", "(1)."),
                Part("models/generative/pix2pixhd.py", "LocalEnhancer"),
                Part("layers/gan_training.py", "feature_matching_loss"),
            ),
        ),
        Section(
            "CycleGAN and UNIT",
            "Zhu et al., ICCV 2017; Liu, Breuel, Kautz, NeurIPS 2017",
            ("Generative architectures — GAN (unpaired translation)",),
            (
                (
                    r"\mathcal{L}_{cyc} = \mathbb{E}_x \lVert F(G(x)) - x \rVert_1"
                    r" + \mathbb{E}_y \lVert G(F(y)) - y \rVert_1",
                    "CycleGAN's cycle consistency: translating there and back returns the input",
                ),
                (
                    r"z = E_1(x_1) = E_2(x_2)",
                    "UNIT's shared latent space: both domains' encoders meet in one code",
                ),
            ),
            (
                Part("models/generative/cyclegan.py", "CycleGAN.generator_step", "(1)."),
                Part("models/generative/unit.py", "UNIT.generator_step", "(2)."),
            ),
        ),
    ),
)

PAGES: tuple[Page, ...] = (CLASSIFICATION, SEGMENTATION, DETECTION, GENERATIVE)
