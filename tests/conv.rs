//! `Conv2d`: values and gradients against a direct nested-loop convolution and against
//! PyTorch's `conv2d`; channel growth (output, input, and the `FlatLinear` that reads the
//! last convolution), by hand and through `Expandable` with every exact init, leaves a CNN's
//! output unchanged; growth appends rows and columns of the 2-D parameter view; bad sizes are
//! typed errors that change nothing.

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};
use dfdx_grow::{
    flatten, grow_between, scoped, scoped_mut, Conv2d, Data, Expandable, FlatLinear, GrowError,
    Images, Init, Linear, ParamMut, ParamRef, Params, Real, Site,
};

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn f<E: Real>(x: E) -> f64 {
    x.to_f64().unwrap()
}

fn cast<E: Real>(v: &[f64]) -> Vec<E> {
    v.iter().map(|&x| E::from_f64(x).unwrap()).collect()
}

fn uniform(n: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// One convolution problem: sizes and data in f64.
#[derive(Clone, Debug)]
struct Case {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    s: usize,
    p: usize,
    x: Vec<f64>,
    wt: Vec<f64>,
    bias: Vec<f64>,
}

impl Case {
    fn out_hw(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.p - self.kh) / self.s + 1,
            (self.w + 2 * self.p - self.kw) / self.s + 1,
        )
    }

    /// A random problem: channels 1-6, sizes 1-9, kernel 1-3 (each side), stride 1-2,
    /// padding 0-2, batch 1-3; redrawn until the kernel fits the padded input.
    fn random(rng: &mut StdRng) -> Self {
        loop {
            let (kh, kw) = (rng.gen_range(1..=3), rng.gen_range(1..=3));
            let (h, w, p) = (
                rng.gen_range(1..=9),
                rng.gen_range(1..=9),
                rng.gen_range(0..=2),
            );
            if h + 2 * p < kh || w + 2 * p < kw {
                continue;
            }
            let (b, c, o) = (
                rng.gen_range(1..=3),
                rng.gen_range(1..=6),
                rng.gen_range(1..=6),
            );
            return Case {
                b,
                c,
                h,
                w,
                o,
                kh,
                kw,
                s: rng.gen_range(1..=2),
                p,
                x: uniform(b * c * h * w, rng),
                wt: uniform(o * c * kh * kw, rng),
                bias: uniform(o, rng),
            };
        }
    }

    fn conv<E: Real>(&self, dev: &Cpu) -> Conv2d<E, Cpu>
    where
        Cpu: Device<E>,
    {
        Conv2d::from_parts(
            dev.tensor_from_vec(cast(&self.wt), (self.o, self.c * self.kh * self.kw)),
            dev.tensor_from_vec(cast(&self.bias), (self.o,)),
            (self.kh, self.kw),
            self.s,
            self.p,
        )
        .unwrap()
    }

    fn input<E: Real>(&self, dev: &Cpu) -> Images<E, Cpu>
    where
        Cpu: Device<E>,
    {
        dev.tensor_from_vec(cast(&self.x), (self.b, self.c, self.h, self.w))
    }

    /// The convolution by its definition, and the gradients of `sum(y * r)`:
    /// `(y, dx, dw, db)`.
    // Written as the definition reads, index by index.
    #[allow(clippy::type_complexity, clippy::needless_range_loop)]
    fn reference(&self, r: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (oh, ow) = self.out_hw();
        let mut y = vec![0.0; self.b * self.o * oh * ow];
        let mut dx = vec![0.0; self.x.len()];
        let mut dw = vec![0.0; self.wt.len()];
        let mut db = vec![0.0; self.o];
        for b in 0..self.b {
            for o in 0..self.o {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let yi = ((b * self.o + o) * oh + oy) * ow + ox;
                        let mut acc = self.bias[o];
                        db[o] += r[yi];
                        for c in 0..self.c {
                            for i in 0..self.kh {
                                for j in 0..self.kw {
                                    let iy = (oy * self.s + i) as isize - self.p as isize;
                                    let ix = (ox * self.s + j) as isize - self.p as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= self.h as isize
                                        || ix >= self.w as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((b * self.c + c) * self.h + iy as usize) * self.w
                                        + ix as usize;
                                    let wi = ((o * self.c + c) * self.kh + i) * self.kw + j;
                                    acc += self.wt[wi] * self.x[xi];
                                    dw[wi] += r[yi] * self.x[xi];
                                    dx[xi] += r[yi] * self.wt[wi];
                                }
                            }
                        }
                        y[yi] = acc;
                    }
                }
            }
        }
        (y, dx, dw, db)
    }
}

/// Which im2col a forward pass takes.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// `Module::forward`: the host im2col on the Cpu device.
    Module,
    /// `Conv2d::forward_portable`: dfdx's `concat_along` + `gather`.
    Portable,
}

/// `(y, dx, dw, db)` of the crate's layer for the gradients of `sum(y * r)`.
#[allow(clippy::type_complexity)]
fn ours<E: Real>(case: &Case, r: &[f64], path: Path) -> (Vec<E>, Vec<E>, Vec<E>, Vec<E>)
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let conv = case.conv::<E>(&dev);
    let x = case.input::<E>(&dev);
    let grads = conv.try_alloc_grads().unwrap();
    let xt = x.clone().traced(grads);
    let y = match path {
        Path::Module => conv.forward(xt),
        Path::Portable => conv.forward_portable(xt).unwrap(),
    };
    let (oh, ow) = case.out_hw();
    assert_eq!(*y.shape(), (case.b, case.o, oh, ow));
    let y_host = y.as_vec();
    let rt: Images<E, Cpu> = dev.tensor_from_vec(cast(r), (case.b, case.o, oh, ow));
    let grads = (y * rt).sum().backward();
    (
        y_host,
        grads.get(&x).as_vec(),
        grads.get(conv.weight()).as_vec(),
        grads.get(conv.bias()).as_vec(),
    )
}

/// `max |a - b| / max(1, |b|)` over the entries.
fn rel_err<E: Real>(a: &[E], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (f(*a) - b).abs() / b.abs().max(1.0))
        .fold(0.0, f64::max)
}

fn check_against_loops<E: Real>(seed: u64, cases: usize, path: Path, tol: f64)
where
    Cpu: Device<E>,
{
    let mut rng = rng(seed);
    for n in 0..cases {
        let case = Case::random(&mut rng);
        let (oh, ow) = case.out_hw();
        let r = uniform(case.b * case.o * oh * ow, &mut rng);
        let (y, dx, dw, db) = case.reference(&r);
        let got = ours::<E>(&case, &r, path);
        for (name, a, b) in [
            ("y", &got.0, &y),
            ("dx", &got.1, &dx),
            ("dw", &got.2, &dw),
            ("db", &got.3, &db),
        ] {
            let e = rel_err(a, b);
            assert!(
                e <= tol,
                "case {n} {case:?} via {path:?}: {name} off by {e:e}"
            );
        }
    }
}

#[test]
fn forward_and_all_gradients_equal_nested_loops_in_f64_over_random_shapes() {
    check_against_loops::<f64>(1, 300, Path::Module, 1e-12);
}

#[test]
fn portable_path_equals_nested_loops_in_f64_over_random_shapes() {
    check_against_loops::<f64>(2, 150, Path::Portable, 1e-12);
}

#[test]
fn forward_and_all_gradients_equal_nested_loops_in_f32_over_random_shapes() {
    check_against_loops::<f32>(3, 150, Path::Module, 1e-5);
    check_against_loops::<f32>(4, 50, Path::Portable, 1e-5);
}

/// Values and gradients of `sum(y * r)` from PyTorch, for inputs built from closed forms
/// (so only the results need pasting). Generated by (torch 2.x, float64):
///
/// ```python
/// import math, torch
/// import torch.nn.functional as F
/// torch.set_default_dtype(torch.float64)
/// def case(name, b, c, h, w, o, kh, kw, s, p):
///     x = torch.tensor([math.sin(0.37 * i + 0.1) for i in range(b * c * h * w)]).reshape(b, c, h, w).requires_grad_()
///     wt = torch.tensor([0.5 * math.cos(0.23 * i) for i in range(o * c * kh * kw)]).reshape(o, c, kh, kw).requires_grad_()
///     bias = torch.tensor([0.1 * i - 0.05 for i in range(o)]).requires_grad_()
///     y = F.conv2d(x, wt, bias, stride=s, padding=p)
///     r = torch.tensor([math.cos(0.11 * i) for i in range(y.numel())]).reshape(y.shape)
///     (y * r).sum().backward()
///     fmt = lambda t: ", ".join(repr(v) for v in t.detach().flatten().tolist())
///     print(f"const {name}: TorchCase = TorchCase {{")
///     print(f"    input: ({b}, {c}, {h}, {w}), out_c: {o}, kernel: ({kh}, {kw}), stride: {s}, padding: {p},")
///     for field, t in [("y", y), ("dx", x.grad), ("dw", wt.grad), ("db", bias.grad)]:
///         print(f"    {field}: &[{fmt(t)}],")
///     print("};")
/// case("TORCH_PAD1", 2, 2, 4, 5, 3, 3, 3, 1, 1)
/// case("TORCH_STRIDE2_PAD2_RECT", 1, 3, 5, 6, 2, 2, 3, 2, 2)
/// ```
struct TorchCase {
    input: (usize, usize, usize, usize),
    out_c: usize,
    kernel: (usize, usize),
    stride: usize,
    padding: usize,
    y: &'static [f64],
    dx: &'static [f64],
    dw: &'static [f64],
    db: &'static [f64],
}

const TORCH_PAD1: TorchCase = TorchCase {
    input: (2, 2, 4, 5),
    out_c: 3,
    kernel: (3, 3),
    stride: 1,
    padding: 1,
    y: &[
        -0.932329291057394,
        -0.7865762536625783,
        0.019533007213972484,
        0.8162313017581947,
        0.9098049678043013,
        0.8667784713702809,
        1.830507048142751,
        2.2235324779893255,
        2.3088459525630443,
        1.4146515547589618,
        0.9423291383585518,
        0.8148122268660234,
        -0.040783917722668366,
        -0.8976274158130004,
        -1.029206314370533,
        -0.899611500678669,
        -1.8024747739383709,
        -2.1842582948219165,
        -2.2771799677595865,
        -1.4444556456089397,
        1.51736443150185,
        2.1937407768602317,
        1.872624448650944,
        1.3048244516345608,
        0.49248235072442587,
        0.640938309761679,
        0.23694289528433143,
        -0.6408813948897478,
        -1.4251981293366378,
        -1.2655331138467127,
        -1.5506222233510183,
        -2.30139301694116,
        -1.968818251814678,
        -1.363005907009629,
        -0.47274751942463594,
        -0.5107200982647117,
        -0.14734043699748628,
        0.6607860623592742,
        1.3862455335026538,
        1.2548924955020018,
        -0.5572425088518708,
        -1.4357029375570765,
        -1.8939521516356694,
        -2.075562030603376,
        -1.2891388344084005,
        -1.4069322412976306,
        -1.933019217688269,
        -1.3751120046412666,
        -0.6107880363899116,
        0.11044387124729495,
        0.8915986398572173,
        1.8324132271458922,
        2.3277365883296963,
        2.5283135185072427,
        1.695490120568186,
        1.6070303781634432,
        2.116250429732288,
        1.6226037803328222,
        0.9296471175619359,
        0.23921538514276,
        1.4309558503411879,
        2.051762278154502,
        1.6541187377952677,
        1.0258307206578317,
        0.25485620727518393,
        0.40675354314460116,
        -0.07305493645960379,
        -0.9276804654621844,
        -1.6635160608496529,
        -1.4232421607623582,
        -1.6366489817647976,
        -2.319627967846203,
        -1.9220656141247785,
        -1.2711279617883688,
        -0.4271802318117885,
        -0.49688793467073894,
        -0.06233837097607901,
        0.745938146031181,
        1.4464881688877573,
        1.2340676721069215,
        -0.761727794499322,
        -1.6528976042125798,
        -2.040389761332373,
        -2.144957470717506,
        -1.3273602795151986,
        -1.4926125487101782,
        -1.950947259367717,
        -1.3364382382486297,
        -0.5342813056583846,
        0.13356826873185942,
        0.9120914641269342,
        1.8750226326435515,
        2.31503650152366,
        2.4484883056891165,
        1.5685534332332403,
        1.469839164556474,
        1.9038838618732499,
        1.3456124579098219,
        0.6119859857610995,
        -0.014736925953545282,
        -0.4516244561502839,
        -0.10704125883766402,
        0.7103661741308596,
        1.4519306742273312,
        1.3372155723246757,
        1.3643333068386272,
        2.3406482543249227,
        2.5295862487312175,
        2.3964584075154707,
        1.4327140271292964,
        0.8027594510528513,
        0.4426109100746905,
        -0.4316112443922938,
        -1.2271150453924724,
        -1.117843773337618,
        -0.9412005237469997,
        -1.8459435826245434,
        -2.049453852485039,
        -1.9552783615161444,
        -1.0639392229640965,
    ],
    dx: &[
        1.8697046445547052,
        2.1743653540081813,
        1.7749974674949334,
        1.3541737593403844,
        0.4003854023379624,
        0.34078455105793565,
        -0.6346637413527202,
        -1.3316979813650582,
        -2.0126349170761273,
        -2.065393035853625,
        -1.9273364536625315,
        -3.8781178968614824,
        -4.415771041697048,
        -4.9000472112892695,
        -3.7472835538881313,
        -2.6317727374475304,
        -4.263470055725901,
        -4.363194383328647,
        -4.410177272033935,
        -2.977096054560039,
        -3.029881255155428,
        -4.616143682081696,
        -4.646328507459001,
        -4.6203494241161245,
        -2.956975915488834,
        -4.2230732156909605,
        -5.77152892886158,
        -5.377513719479283,
        -4.918496177782884,
        -2.702222713498342,
        -2.8067988763865928,
        -3.2104322740586504,
        -2.553690651735445,
        -1.866080517116262,
        -0.4987903344620094,
        -0.2022978767623352,
        0.4700510092248115,
        0.9288434669972262,
        1.3764082469134542,
        1.3738665280917415,
        1.1412298552234474,
        0.9700760327515983,
        0.5228438894539842,
        0.0692917116527706,
        -0.4726572742919015,
        -0.9981060517688762,
        -2.5920871146809716,
        -3.2207045864767387,
        -3.810390812210342,
        -3.1466241980092042,
        -3.0138891107117045,
        -5.277445105817487,
        -5.6460832546213116,
        -5.946472655186605,
        -4.23387150659264,
        -2.8811305139098238,
        -4.407424606842568,
        -4.354220730713903,
        -4.24838388744253,
        -2.708090104404268,
        -3.144755750467609,
        -4.551248546411585,
        -4.421060547578199,
        -4.237431634990663,
        -2.55837826287121,
        -3.5399609272087833,
        -4.4651073508905155,
        -3.8994720583661526,
        -3.286700711559062,
        -1.4919390141376867,
        -1.5762383546166547,
        -1.2419467867478564,
        -0.5190228326948794,
        0.21017496767618993,
        0.8832063804483488,
        0.6988167612902296,
        1.7567336216052485,
        2.1686992270651344,
        2.5544500211454833,
        2.063261555354614,
    ],
    dw: &[
        3.3696275746159134,
        3.4482271472788835,
        2.1977711574633734,
        0.2189726474797533,
        -0.44605889602664295,
        -0.8688319001045306,
        -3.379122328188571,
        -4.279975985270091,
        -3.471348149170945,
        -0.20973643768164996,
        -1.2958788416946563,
        -1.8667172882567553,
        -2.428674666489296,
        -3.1294728453311906,
        -2.688486331309209,
        -2.579027686650133,
        -2.282965912009641,
        -1.1416576833947016,
        -0.7951839415047468,
        0.02165687786465087,
        0.75486094548387,
        0.6019113108348366,
        1.046240710289296,
        0.8932715778893374,
        2.216292045363845,
        2.0468410477173418,
        1.0005324027622495,
        2.4669149164807367,
        3.505303314844576,
        3.0652388350672166,
        1.1916797376989245,
        1.256397510433521,
        0.7812286910862566,
        -0.7191000197435073,
        -1.7388598501178862,
        -2.0175273909606863,
        -2.433694298617808,
        -3.4737173409181024,
        -3.0862441770427425,
        -0.9274236053096161,
        -0.7853687578199127,
        -0.1825507430961104,
        0.7705416384670558,
        1.870839498418576,
        2.293719275419427,
        -2.693827931363934,
        -2.829870992515145,
        -1.741075669926308,
        1.0260649523965482,
        1.650690168117268,
        1.7689784162368234,
        3.425410016724925,
        4.32960784109932,
        3.516291930741954,
    ],
    db: &[11.500196318944315, -30.92681907813395, 24.900738842327225],
};
const TORCH_STRIDE2_PAD2_RECT: TorchCase = TorchCase {
    input: (1, 3, 5, 6),
    out_c: 2,
    kernel: (2, 3),
    stride: 2,
    padding: 2,
    y: &[
        -0.05,
        -0.05,
        -0.05,
        -0.05,
        0.32423994085697977,
        1.2988884472229654,
        0.9755477883424002,
        0.18956139383271522,
        -0.33503190942381067,
        -0.4549411855562637,
        0.519049697302672,
        0.7769781821245814,
        0.1339258341681181,
        -0.17992484703139733,
        -1.9388574843175825,
        -1.8550253700123496,
        0.05,
        0.05,
        0.05,
        0.05,
        0.10998972668449086,
        -0.2760354368669014,
        -0.5148620748766266,
        -0.3056403716036463,
        0.17450748238951833,
        0.6006413087786217,
        0.3320872261625799,
        -0.08606360777317677,
        0.42028152250704365,
        1.2112803109715855,
        1.7976689186990558,
        1.3429497772422847,
    ],
    dx: &[
        1.0470676373574554,
        0.5281306446729571,
        1.0180480722750553,
        0.5106230042236057,
        0.9767225415442473,
        0.48694305293708506,
        0.3133490444045137,
        0.14348947382697858,
        0.2507870498098756,
        0.11142332161190627,
        0.1851935904896777,
        0.07801030611451029,
        0.8592944366360191,
        0.4222823219881617,
        0.7846113103849912,
        0.3820831485735661,
        0.7004439563298941,
        0.33726542891421973,
        0.048110860777992634,
        0.008770643690321997,
        -0.02172138043308254,
        -0.026219047762063925,
        -0.09129105785299188,
        -0.06089180850176462,
        0.5078285041267443,
        0.2359906216613977,
        0.40170870382897617,
        0.18075772409690297,
        0.290733127419439,
        0.12333986257638417,
        -0.5637292337571908,
        -0.30679927490677916,
        -0.631211046717561,
        -0.3387534186817581,
        -0.6910629042079077,
        -0.3666127774980439,
        -1.182896894549725,
        -0.6167249101786892,
        -1.2244250586160184,
        -0.6339477700618112,
        -1.2511526124550296,
        -0.643507593499285,
        -0.7850838173298049,
        -0.4087536739979206,
        -0.818116366583494,
        -0.42252582078058704,
        -0.8412596854778754,
        -0.43119055822012525,
        -1.2590963918866493,
        -0.6392699280629677,
        -1.2402165946297807,
        -0.6255236632587551,
        -1.2063453021520694,
        -0.6042161909615346,
        -0.8568825452352473,
        -0.43284185788699964,
        -0.8491732400302179,
        -0.4258084595274745,
        -0.8311992950641145,
        -0.41362797193076156,
        -1.2608797983906652,
        -0.6444939837427459,
        -1.2574548475228444,
        -0.6391059640711897,
        -1.2388300288104142,
        -0.6259925567153591,
        -0.7620001452485863,
        -0.37740192312371634,
        -0.7151890217655577,
        -0.35186808583976675,
        -0.6597328335025352,
        -0.3220809360698569,
        -1.1570623321498221,
        -0.577315095054181,
        -1.0949078460995065,
        -0.5423394443688268,
        -1.0195183285126523,
        -0.5008081007315034,
        -0.525663033660968,
        -0.251234004853458,
        -0.44867003155683854,
        -0.21103060723165,
        -0.36625359401171864,
        -0.16827631297334836,
        -0.8328283405327772,
        -0.4001596011617772,
        -0.7237845421393883,
        -0.3422590645737841,
        -0.6059917779997043,
        -0.2802213674663581,
    ],
    dw: &[
        0.49585050374489037,
        1.09287797961276,
        0.34621722761081697,
        1.2537098423435047,
        0.6539219249210916,
        1.4759182359445957,
        -1.6826098310633417,
        -1.3246832574339469,
        -1.666241659513162,
        1.5469402110787085,
        1.839469914157322,
        1.650878082802778,
        -0.8466276308553025,
        -1.369037418833609,
        -0.6935820483823351,
        -0.9312160395402491,
        -0.27044385413960037,
        -1.1317562915625532,
        1.2186549819972863,
        1.0874726713507772,
        1.2923306825894214,
        -2.291619104276431,
        -1.7490825120407818,
        -2.185812117194968,
        0.26100249799845376,
        0.6765460066281247,
        0.07684150346929464,
        -1.3044930648337574,
        -1.9999982600447108,
        -1.1511256720018124,
        -1.1642432552105255,
        -0.9464317359052379,
        -1.276311376549371,
        2.019668755972176,
        1.3321387673100424,
        1.9458345842498184,
    ],
    db: &[9.513709132403385, -11.904248973048013],
};

impl TorchCase {
    fn case(&self) -> Case {
        let (b, c, h, w) = self.input;
        let (kh, kw) = self.kernel;
        let o = self.out_c;
        Case {
            b,
            c,
            h,
            w,
            o,
            kh,
            kw,
            s: self.stride,
            p: self.padding,
            x: (0..b * c * h * w)
                .map(|i| (0.37 * i as f64 + 0.1).sin())
                .collect(),
            wt: (0..o * c * kh * kw)
                .map(|i| 0.5 * (0.23 * i as f64).cos())
                .collect(),
            bias: (0..o).map(|i| 0.1 * i as f64 - 0.05).collect(),
        }
    }

    fn check<E: Real>(&self, path: Path, tol: f64)
    where
        Cpu: Device<E>,
    {
        let case = self.case();
        let r: Vec<f64> = (0..self.y.len()).map(|i| (0.11 * i as f64).cos()).collect();
        let (y, dx, dw, db) = ours::<E>(&case, &r, path);
        for (name, a, b) in [
            ("y", &y, self.y),
            ("dx", &dx, self.dx),
            ("dw", &dw, self.dw),
            ("db", &db, self.db),
        ] {
            let e = rel_err(a, b);
            assert!(
                e <= tol,
                "{name} differs from PyTorch by {e:e} via {path:?}"
            );
        }
        // The nested loops agree with PyTorch too, so both references check the same thing.
        let (ly, ..) = case.reference(&r);
        assert!(rel_err(&ly, self.y) <= 1e-12);
    }
}

#[test]
fn matches_pytorch_conv2d_values_and_gradients_in_f64() {
    for t in [&TORCH_PAD1, &TORCH_STRIDE2_PAD2_RECT] {
        t.check::<f64>(Path::Module, 1e-12);
        t.check::<f64>(Path::Portable, 1e-12);
    }
}

#[test]
fn matches_pytorch_conv2d_values_and_gradients_in_f32() {
    for t in [&TORCH_PAD1, &TORCH_STRIDE2_PAD2_RECT] {
        t.check::<f32>(Path::Module, 1e-5);
        t.check::<f32>(Path::Portable, 1e-5);
    }
}

/// `conv -> relu -> conv -> relu -> flatten -> linear`.
#[derive(Clone, Debug)]
struct Cnn<E: Real>
where
    Cpu: Device<E>,
{
    c1: Conv2d<E, Cpu>,
    c2: Conv2d<E, Cpu>,
    fc: FlatLinear<E, Cpu>,
}

impl<E: Real> Cnn<E>
where
    Cpu: Device<E>,
{
    /// A CNN over `(in_c, h, w)` images with random geometry; `None` when the image is too
    /// small for the drawn kernels.
    fn random(in_c: usize, h: usize, w: usize, rng: &mut StdRng) -> Option<Self> {
        let dev = Cpu::default();
        let (c1, c2) = (rng.gen_range(1..=5), rng.gen_range(1..=5));
        let conv1 = Conv2d::new(
            in_c,
            c1,
            rng.gen_range(1..=3),
            rng.gen_range(1..=2),
            rng.gen_range(0..=1),
            &dev,
            rng,
        )
        .unwrap();
        let (h1, w1) = conv1.output_size(h, w)?;
        let conv2 = Conv2d::new(
            c1,
            c2,
            rng.gen_range(1..=3),
            rng.gen_range(1..=2),
            rng.gen_range(0..=1),
            &dev,
            rng,
        )
        .unwrap();
        let hw2 = conv2.output_size(h1, w1)?;
        let fc = FlatLinear::new(c2, hw2, rng.gen_range(1..=4), &dev, rng).unwrap();
        Some(Self {
            c1: conv1,
            c2: conv2,
            fc,
        })
    }

    fn forward<T: Tape<E, Cpu>>(&self, x: Images<E, Cpu, T>) -> Tensor<(usize, usize), E, Cpu, T> {
        let a = self.c1.forward(x).relu();
        let b = self.c2.forward(a).relu();
        self.fc.forward(b)
    }
}

impl<E: Real> Params<E, Cpu> for Cnn<E>
where
    Cpu: Device<E>,
{
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, E, Cpu>)) {
        self.c1.visit(&mut scoped("c1", f));
        self.c2.visit(&mut scoped("c2", f));
        self.fc.visit(&mut scoped("fc", f));
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, E, Cpu>)) {
        self.c1.visit_mut(&mut scoped_mut("c1", f));
        self.c2.visit_mut(&mut scoped_mut("c2", f));
        self.fc.visit_mut(&mut scoped_mut("fc", f));
    }
}

fn images<E: Real>(b: usize, c: usize, h: usize, w: usize, rng: &mut StdRng) -> Images<E, Cpu>
where
    Cpu: Device<E>,
{
    Cpu::default().tensor_from_vec(cast(&uniform(b * c * h * w, rng)), (b, c, h, w))
}

/// `max |after - before|` over `max(1, max |before|)`.
fn scaled_change<E: Real>(before: &[E], after: &[E]) -> f64 {
    assert_eq!(before.len(), after.len());
    let scale = before.iter().map(|x| f(*x).abs()).fold(1.0, f64::max);
    before
        .iter()
        .zip(after)
        .map(|(a, b)| (f(*a) - f(*b)).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Grows each site of random CNNs by random channels with random fan-in (scale 1) and zero
/// fan-out, and checks the output against the one before.
fn growth_keeps_output<E: Real>(seed: u64, models: usize, tol: f64)
where
    Cpu: Device<E>,
{
    let mut rng = rng(seed);
    let mut grown = 0;
    while grown < models {
        let (in_c, h, w) = (
            rng.gen_range(1..=3),
            rng.gen_range(3..=10),
            rng.gen_range(3..=10),
        );
        let Some(mut cnn) = Cnn::<E>::random(in_c, h, w, &mut rng) else {
            continue;
        };
        let x = images::<E>(rng.gen_range(1..=3), in_c, h, w, &mut rng);
        let before = cnn.forward(x.clone()).as_vec();

        // Site 1: the first convolution's output channels, read by the second convolution.
        let k = rng.gen_range(1..=3);
        let fan_in = cast(&uniform(k * cnn.c1.weight().shape().1, &mut rng));
        let bias = cast(&uniform(k, &mut rng));
        cnn.c1.grow_out_channels(&fan_in, &bias).unwrap();
        let (kh, kw) = cnn.c2.kernel();
        let zeros = vec![E::zero(); k * cnn.c2.out_channels() * kh * kw];
        cnn.c2.grow_in_channels(&zeros, &[]).unwrap();
        let mid = cnn.forward(x.clone()).as_vec();
        let e = scaled_change(&before, &mid);
        assert!(
            e <= tol,
            "model {grown}: growing conv1 by {k} moved the output by {e:e}"
        );

        // Site 2: the second convolution's output channels, read by the flattened linear
        // (h * w columns per channel).
        let k = rng.gen_range(1..=3);
        let fan_in = cast(&uniform(k * cnn.c2.weight().shape().1, &mut rng));
        let bias = cast(&uniform(k, &mut rng));
        cnn.c2.grow_out_channels(&fan_in, &bias).unwrap();
        let (oh, ow) = cnn.fc.map_size();
        let zeros = vec![E::zero(); k * cnn.fc.out_width() * oh * ow];
        cnn.fc.grow_inputs(&zeros, &[]).unwrap();
        let after = cnn.forward(x.clone()).as_vec();
        let e = scaled_change(&before, &after);
        assert!(
            e <= tol,
            "model {grown}: growing conv2 by {k} moved the output by {e:e}"
        );
        grown += 1;
    }
}

#[test]
fn growing_output_channels_with_zero_fan_out_keeps_a_cnns_output_f64() {
    growth_keeps_output::<f64>(10, 60, 1e-12);
}

#[test]
fn growing_output_channels_with_zero_fan_out_keeps_a_cnns_output_f32() {
    growth_keeps_output::<f32>(11, 60, 1e-5);
}

/// New input channels (extra image planes) with zero fan-out leave the output unchanged
/// whatever the new planes hold.
fn input_growth_keeps_output<E: Real>(seed: u64, cases: usize, tol: f64)
where
    Cpu: Device<E>,
{
    let mut rng = rng(seed);
    let dev = Cpu::default();
    for n in 0..cases {
        let case = Case::random(&mut rng);
        let mut conv = case.conv::<E>(&dev);
        let before = conv.forward(case.input::<E>(&dev)).as_vec();
        let k = rng.gen_range(1..=3);
        let zeros = vec![E::zero(); k * case.o * case.kh * case.kw];
        conv.grow_in_channels(&zeros, &[]).unwrap();
        assert_eq!(conv.in_channels(), case.c + k);
        // The input gains k random planes after the existing ones in every image.
        let plane = case.h * case.w;
        let mut x = Vec::new();
        for b in 0..case.b {
            x.extend_from_slice(&case.x[b * case.c * plane..(b + 1) * case.c * plane]);
            x.extend(uniform(k * plane, &mut rng));
        }
        let x: Images<E, Cpu> = dev.tensor_from_vec(cast(&x), (case.b, case.c + k, case.h, case.w));
        let after = conv.forward(x).as_vec();
        let e = scaled_change(&before, &after);
        assert!(
            e <= tol,
            "case {n}: {k} zero input channels moved the output by {e:e}"
        );
    }
}

#[test]
fn growing_input_channels_with_zero_fan_out_keeps_the_output_f64() {
    input_growth_keeps_output::<f64>(20, 100, 1e-12);
}

#[test]
fn growing_input_channels_with_zero_fan_out_keeps_the_output_f32() {
    input_growth_keeps_output::<f32>(21, 100, 1e-5);
}

#[test]
fn rescaling_an_input_channel_equals_scaling_that_input_plane() {
    let mut rng = rng(30);
    let dev = Cpu::default();
    for _ in 0..50 {
        let case = Case::random(&mut rng);
        let c = rng.gen_range(0..case.c);
        let factor = rng.gen_range(-2.0..2.0);
        let mut conv = case.conv::<f64>(&dev);
        let zeros = vec![0.0; case.o * case.kh * case.kw];
        conv.grow_in_channels(&zeros, &[(c, factor)]).unwrap();
        let plane = case.h * case.w;
        let mut scaled = case.clone();
        let mut x = Vec::new();
        for b in 0..case.b {
            let img = &mut scaled.x[b * case.c * plane..(b + 1) * case.c * plane];
            for v in &mut img[c * plane..(c + 1) * plane] {
                *v *= factor;
            }
            x.extend_from_slice(&case.x[b * case.c * plane..(b + 1) * case.c * plane]);
            x.extend(uniform(plane, &mut rng));
        }
        let got = conv
            .forward(dev.tensor_from_vec(x, (case.b, case.c + 1, case.h, case.w)))
            .as_vec();
        let r = vec![0.0; got.len()];
        let (want, ..) = scaled.reference(&r);
        assert!(rel_err(&got, &want) <= 1e-12);
    }
}

#[test]
fn growth_appends_rows_and_columns_of_the_2d_parameter_view() {
    // The growth-aware optimizers keep old state at the top-left of a grown (rows, cols)
    // tensor: old weights must stay at the same (row, col) after any growth.
    let mut rng = rng(40);
    let dev = Cpu::default();
    let mut conv = Conv2d::<f64, Cpu>::with_kernel(3, 4, (2, 3), 1, 1, &dev, &mut rng).unwrap();
    let dims = |c: &dyn Params<f64, Cpu>| -> Vec<(usize, usize)> {
        c.param_dims().into_iter().map(|(_, d)| d).collect()
    };
    let names: Vec<String> = conv.param_dims().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight", "bias"]);
    assert_eq!(dims(&conv), vec![(4, 3 * 6), (4, 1)]);
    let old = conv.weight_vec();
    let old_b = conv.bias_vec();

    conv.grow_out_channels(&uniform(2 * 18, &mut rng), &[0.5, 0.25])
        .unwrap();
    assert_eq!(dims(&conv), vec![(6, 18), (6, 1)]);
    assert_eq!(&conv.weight_vec()[..4 * 18], &old[..]);
    assert_eq!(&conv.bias_vec()[..4], &old_b[..]);

    let mid = conv.weight_vec();
    conv.grow_in_channels(&uniform(2 * 6 * 6, &mut rng), &[])
        .unwrap();
    assert_eq!(dims(&conv), vec![(6, 5 * 6), (6, 1)]);
    assert_eq!(conv.in_channels(), 5);
    let now = conv.weight_vec();
    for r in 0..6 {
        assert_eq!(&now[r * 30..r * 30 + 18], &mid[r * 18..(r + 1) * 18]);
    }

    // The flattened linear: each new channel appends `h * w` columns.
    let mut fc = FlatLinear::<f64, Cpu>::new(3, (2, 2), 2, &dev, &mut rng).unwrap();
    let old = fc.linear().weight_vec();
    fc.grow_inputs(&uniform(2 * 2 * 4, &mut rng), &[]).unwrap();
    assert_eq!(dims(&fc), vec![(2, 5 * 4), (2, 1)]);
    let now = fc.linear().weight_vec();
    for r in 0..2 {
        assert_eq!(&now[r * 20..r * 20 + 12], &old[r * 12..(r + 1) * 12]);
    }
}

#[test]
fn fan_in_and_fan_out_accessors_return_what_growth_appended() {
    let mut rng = rng(50);
    let dev = Cpu::default();
    let mut conv = Conv2d::<f64, Cpu>::new(2, 3, 3, 2, 1, &dev, &mut rng).unwrap();
    let fan_in = uniform(2 * 18, &mut rng);
    conv.grow_out_channels(&fan_in, &[0.1, 0.2]).unwrap();
    assert_eq!(conv.out_channel(3), Some((fan_in[..18].to_vec(), 0.1)));
    assert_eq!(conv.out_channel(4), Some((fan_in[18..].to_vec(), 0.2)));
    assert_eq!(conv.out_channel(5), None);

    let fan_out = uniform(2 * 5 * 9, &mut rng);
    conv.grow_in_channels(&fan_out, &[]).unwrap();
    assert_eq!(conv.in_channel(2), Some(fan_out[..45].to_vec()));
    assert_eq!(conv.in_channel(3), Some(fan_out[45..].to_vec()));
    assert_eq!(conv.in_channel(4), None);
    // Old channels read back in the documented order: (out, kh, kw) of the weight.
    let w = conv.weight_vec();
    let c0: Vec<f64> = (0..5)
        .flat_map(|o| w[o * 36..o * 36 + 9].to_vec())
        .collect();
    assert_eq!(conv.in_channel(0), Some(c0));

    // The same through `Expandable`, whose counts a site reads.
    assert_eq!((conv.in_width(), conv.out_width()), (4, 5));
    assert_eq!((conv.unit_fan_in(), conv.unit_fan_out()), (4 * 9, 5 * 9));
    // Output channel 3's fan-in now has the 9 weights of input channel 3 after its own 18.
    let (unit, bias) = conv.output_unit(3).unwrap();
    assert_eq!((unit.len(), &unit[..18], bias), (36, &fan_in[..18], 0.1));
    assert_eq!(conv.input_column(2), conv.in_channel(2));

    let mut fc = FlatLinear::<f64, Cpu>::new(2, (2, 3), 3, &dev, &mut rng).unwrap();
    assert_eq!(
        (fc.in_width(), fc.unit_fan_in(), fc.unit_fan_out()),
        (2, 12, 18)
    );
    let fan_out = uniform(3 * 6, &mut rng);
    fc.grow_inputs(&fan_out, &[]).unwrap();
    assert_eq!(fc.input_column(2), Some(fan_out));
    assert_eq!(fc.input_column(3), None);
    assert_eq!(fc.channels(), 3);
}

#[test]
fn grouped_rescale_multiplies_every_column_of_the_channel() {
    let mut rng = rng(55);
    let dev = Cpu::default();
    let mut fc = FlatLinear::<f64, Cpu>::new(3, (1, 4), 2, &dev, &mut rng).unwrap();
    let before = fc.input_column(1).unwrap();
    fc.grow_inputs(&[0.0; 8], &[(1, -0.5)]).unwrap();
    let after = fc.input_column(1).unwrap();
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(*a, -0.5 * b);
    }
}

#[test]
fn bad_growth_sizes_are_typed_errors_and_change_nothing() {
    let mut rng = rng(60);
    let dev = Cpu::default();
    let mut conv = Conv2d::<f32, Cpu>::new(2, 3, 3, 1, 0, &dev, &mut rng).unwrap();
    let (w, b) = (conv.weight_vec(), conv.bias_vec());
    let unchanged = |c: &Conv2d<f32, Cpu>| {
        assert_eq!(c.weight_vec(), w);
        assert_eq!(c.bias_vec(), b);
        assert_eq!((c.in_channels(), c.out_channels()), (2, 3));
    };
    assert!(matches!(
        conv.grow_out_channels(&[0.0; 17], &[0.0]),
        Err(GrowError::ShapeMismatch {
            expected: 18,
            found: 17,
            ..
        })
    ));
    unchanged(&conv);
    assert_eq!(conv.grow_out_channels(&[], &[]), Err(GrowError::ZeroUnits));
    unchanged(&conv);
    assert!(matches!(
        conv.grow_in_channels(&[0.0; 26], &[]),
        Err(GrowError::ShapeMismatch {
            expected: 27,
            found: 26,
            ..
        })
    ));
    unchanged(&conv);
    assert_eq!(conv.grow_in_channels(&[], &[]), Err(GrowError::ZeroUnits));
    unchanged(&conv);
    assert!(matches!(
        conv.grow_in_channels(&[0.0; 27], &[(2, 1.0)]),
        Err(GrowError::ShapeMismatch {
            expected: 2,
            found: 2,
            ..
        })
    ));
    unchanged(&conv);

    let linear = Linear::<f32, Cpu>::new(12, 2, &dev, &mut rng).unwrap();
    assert!(matches!(
        FlatLinear::from_linear(linear.clone(), (5, 1)),
        Err(GrowError::InvalidSizes { .. })
    ));
    assert!(matches!(
        FlatLinear::from_linear(linear.clone(), (0, 4)),
        Err(GrowError::InvalidSizes { .. })
    ));
    let mut fc = FlatLinear::from_linear(linear, (2, 2)).unwrap();
    let fw = fc.linear().weight_vec();
    assert!(matches!(
        fc.grow_inputs(&[0.0; 7], &[]),
        Err(GrowError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        fc.grow_inputs(&[0.0; 8], &[(3, 2.0)]),
        Err(GrowError::ShapeMismatch { .. })
    ));
    assert_eq!(fc.grow_inputs(&[], &[]), Err(GrowError::ZeroUnits));
    assert_eq!(fc.linear().weight_vec(), fw);
    assert_eq!(fc.linear().weight.shape(), &(2, 12));
    assert!(matches!(
        fc.check_input(&(1, 3, 2, 3)),
        Err(GrowError::InvalidSizes { .. })
    ));
    assert_eq!(fc.check_input(&(1, 3, 2, 2)), Ok(()));
}

#[test]
fn bad_construction_and_bad_inputs_are_typed_errors() {
    let mut rng = rng(70);
    let dev = Cpu::default();
    for (k, s) in [(0, 1), (3, 0)] {
        assert!(matches!(
            Conv2d::<f32, Cpu>::new(1, 1, k, s, 0, &dev, &mut rng),
            Err(GrowError::InvalidSizes { .. })
        ));
    }
    let conv = Conv2d::<f32, Cpu>::new(2, 3, 3, 2, 1, &dev, &mut rng).unwrap();
    // Columns not a multiple of kh * kw, and a bias of the wrong length.
    assert!(matches!(
        Conv2d::<f32, Cpu>::from_parts(
            dev.zeros_like(&(3, 10)),
            dev.zeros_like(&(3,)),
            (3, 3),
            1,
            0
        ),
        Err(GrowError::InvalidSizes { .. })
    ));
    assert!(matches!(
        Conv2d::from_parts(conv.weight().clone(), dev.zeros_like(&(2,)), (3, 3), 1, 0),
        Err(GrowError::ShapeMismatch { .. })
    ));
    assert_eq!(conv.check_input(&(4, 2, 7, 7)), Ok((4, 4)));
    assert_eq!(conv.output_size(1, 1), Some((1, 1)));
    assert!(matches!(
        conv.check_input(&(4, 3, 7, 7)),
        Err(GrowError::ShapeMismatch {
            expected: 2,
            found: 3,
            ..
        })
    ));
    assert!(matches!(
        conv.check_input(&(0, 2, 7, 7)),
        Err(GrowError::InvalidSizes { .. })
    ));
    let big = Conv2d::<f32, Cpu>::new(1, 1, 5, 1, 1, &dev, &mut rng).unwrap();
    assert_eq!(big.output_size(2, 9), None);
    assert!(matches!(
        big.check_input(&(1, 1, 2, 9)),
        Err(GrowError::InvalidSizes { .. })
    ));
}

#[test]
#[should_panic(expected = "Conv2d::forward")]
fn forward_on_the_wrong_channel_count_panics_with_the_reason() {
    let dev = Cpu::default();
    let conv = Conv2d::<f32, Cpu>::new(2, 3, 3, 1, 1, &dev, &mut rng(0)).unwrap();
    let _ = conv.forward(dev.zeros_like(&(1, 1, 5, 5)));
}

#[test]
fn default_init_is_uniform_within_one_over_sqrt_fan_in() {
    let dev = Cpu::default();
    let conv = Conv2d::<f64, Cpu>::new(4, 16, 3, 1, 0, &dev, &mut rng(80)).unwrap();
    let bound = 1.0 / (4.0f64 * 9.0).sqrt();
    let w = conv.weight_vec();
    assert!(w.iter().chain(&conv.bias_vec()).all(|v| v.abs() <= bound));
    // Spread over the whole range, not a narrower one (576 draws).
    let max = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(max > 0.95 * bound);
}

#[test]
fn flatten_is_channel_major_like_torch_flatten() {
    let dev = Cpu::default();
    let v: Vec<f64> = (0..2 * 3 * 2 * 2).map(|i| i as f64).collect();
    let x: Images<f64, Cpu> = dev.tensor_from_vec(v.clone(), (2, 3, 2, 2));
    let y = flatten(x);
    assert_eq!(*y.shape(), (2, 12));
    assert_eq!(y.as_vec(), v);
    // A convolution's output (a permuted view) flattens in the same order as its values.
    let conv = Conv2d::<f64, Cpu>::new(1, 3, 1, 1, 0, &dev, &mut rng(1)).unwrap();
    let out = conv.forward(dev.tensor_from_vec(vec![1.0, 2.0, 3.0, 4.0], (1, 1, 2, 2)));
    let values = out.as_vec();
    assert_eq!(flatten(out).as_vec(), values);
}

#[test]
fn adam_trains_a_cnn_through_growth_and_new_fan_out_gets_gradient() {
    let mut rng = rng(90);
    let dev = Cpu::default();
    let mut cnn = Cnn::<f64> {
        c1: Conv2d::new(1, 3, 3, 1, 1, &dev, &mut rng).unwrap(),
        c2: Conv2d::new(3, 4, 3, 2, 0, &dev, &mut rng).unwrap(),
        fc: FlatLinear::new(4, (3, 3), 3, &dev, &mut rng).unwrap(),
    };
    let x = images::<f64>(8, 1, 8, 8, &mut rng);
    let mut y = vec![0.0; 8 * 3];
    for r in 0..8 {
        y[r * 3 + r % 3] = 1.0;
    }
    let y: Tensor<(usize, usize), f64, Cpu> = dev.tensor_from_vec(y, (8, 3));
    let mut opt = Adam::<f64>::new(AdamConfig {
        lr: 1e-2,
        ..Default::default()
    })
    .unwrap();
    let step = |cnn: &mut Cnn<f64>, opt: &mut Adam<f64>| {
        let grads = cnn.try_alloc_grads().unwrap();
        let loss = cross_entropy_with_logits_loss(cnn.forward(x.clone().traced(grads)), y.clone());
        let value = loss.as_vec()[0];
        let mut grads = loss.backward();
        opt.update(cnn, &mut grads).unwrap();
        (value, grads)
    };
    let first = step(&mut cnn, &mut opt).0;
    for _ in 0..30 {
        step(&mut cnn, &mut opt);
    }
    let trained = step(&mut cnn, &mut opt).0;
    assert!(trained < 0.5 * first, "loss {first} -> {trained}");

    // Grow conv2 by 2 channels (random fan-in, zero fan-out in the linear).
    let fan_in = uniform(2 * 27, &mut rng);
    cnn.c2.grow_out_channels(&fan_in, &[0.0, 0.0]).unwrap();
    cnn.fc.grow_inputs(&[0.0; 2 * 3 * 9], &[]).unwrap();
    let (after, mut grads) = step(&mut cnn, &mut opt);
    assert!((after - trained).abs() < 0.5 * trained + 1e-9);
    // The new fan-out columns (the last 18 of each fc row) get a non-zero gradient; the
    // new channels' fan-in gets exactly zero (their output is read by zero weights).
    let mut norms = Vec::new();
    let mut grad_of = |_: &str, p: ParamRef<'_, f64, Cpu>| {
        let mut g = vec![0.0; p.len()];
        p.grad_into(&mut grads, &mut g).unwrap();
        norms.push((p.dims(), g));
    };
    cnn.visit(&mut grad_of);
    let (fc_dims, fc_grad) = &norms[4];
    assert_eq!(*fc_dims, (3, 6 * 9));
    let new_cols: f64 = (0..3)
        .flat_map(|r| fc_grad[r * 54 + 36..(r + 1) * 54].to_vec())
        .map(|g| g * g)
        .sum();
    assert!(new_cols > 0.0);
    let (c2_dims, c2_grad) = &norms[2];
    assert_eq!(*c2_dims, (6, 27));
    assert!(c2_grad[4 * 27..].iter().all(|g| *g == 0.0));
    // And training goes on with the optimizer state padded for the grown tensors.
    for _ in 0..10 {
        step(&mut cnn, &mut opt);
    }
    assert!(step(&mut cnn, &mut opt).0 < first);
}

#[test]
fn a_permuted_non_contiguous_input_gives_the_same_values_and_gradients() {
    // Channels-last data viewed as (batch, c, h, w): the layer copies it to contiguous first,
    // and the gradient flows back to the channels-last tensor.
    let mut rng = rng(100);
    let dev = Cpu::default();
    for _ in 0..30 {
        let case = Case::random(&mut rng);
        let (oh, ow) = case.out_hw();
        let r = uniform(case.b * case.o * oh * ow, &mut rng);
        let (y, dx, dw, db) = case.reference(&r);
        let (b, c, h, w) = (case.b, case.c, case.h, case.w);
        let mut nhwc = vec![0.0; case.x.len()];
        for (i, v) in case.x.iter().enumerate() {
            let (bi, ci, yi, xi) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
            nhwc[((bi * h + yi) * w + xi) * c + ci] = *v;
        }
        let src: Tensor<(usize, usize, usize, usize), f64, Cpu> =
            dev.tensor_from_vec(nhwc, (b, h, w, c));
        let conv = case.conv::<f64>(&dev);
        for path in [Path::Module, Path::Portable] {
            let grads = conv.try_alloc_grads().unwrap();
            let x = src.clone().traced(grads).permute::<_, Axes4<0, 3, 1, 2>>();
            let out = match path {
                Path::Module => conv.forward(x),
                Path::Portable => conv.forward_portable(x).unwrap(),
            };
            assert!(rel_err(&out.as_vec(), &y) <= 1e-12);
            let rt: Images<f64, Cpu> = dev.tensor_from_vec(r.clone(), (b, case.o, oh, ow));
            let g = (out * rt).sum().backward();
            let g_nhwc = g.get(&src).as_vec();
            let mut g_nchw = vec![0.0; g_nhwc.len()];
            for (i, v) in g_nchw.iter_mut().enumerate() {
                let (bi, ci, yi, xi) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
                *v = g_nhwc[((bi * h + yi) * w + xi) * c + ci];
            }
            assert!(rel_err(&g_nchw, &dx) <= 1e-12, "{path:?}");
            assert!(rel_err(&g.get(conv.weight()).as_vec(), &dw) <= 1e-12);
            assert!(rel_err(&g.get(conv.bias()).as_vec(), &db) <= 1e-12);
        }
    }
}

/// Grows both sites of random CNNs through `grow_between` (the `Expandable` impls of `Conv2d`
/// and `FlatLinear`, sized by their unit fan-in and fan-out) with every exact init, and checks
/// the output against the one before.
fn exact_inits_keep_output<E: Real>(seed: u64, models: usize, tol: f64)
where
    Cpu: Device<E>,
{
    let mut rng = rng(seed);
    let inits = [Init::ZerosOut, Init::MirrorPairs, Init::CopyHalve];
    let mut grown = 0;
    while grown < models {
        let (in_c, h, w) = (
            rng.gen_range(1..=3),
            rng.gen_range(3..=10),
            rng.gen_range(3..=10),
        );
        let Some(mut cnn) = Cnn::<E>::random(in_c, h, w, &mut rng) else {
            continue;
        };
        let x = images::<E>(rng.gen_range(1..=3), in_c, h, w, &mut rng);
        let before = cnn.forward(x.clone()).as_vec();
        for init in &inits {
            let k = 2 * rng.gen_range(1..=2); // MirrorPairs needs an even k
            let (c1, c2) = (cnn.c1.out_channels(), cnn.c2.out_channels());
            grow_between(&mut cnn.c1, &mut cnn.c2, k, init, &mut rng).unwrap();
            grow_between(&mut cnn.c2, &mut cnn.fc, k, init, &mut rng).unwrap();
            assert_eq!(
                (cnn.c1.out_channels(), cnn.c2.in_channels()),
                (c1 + k, c1 + k)
            );
            assert_eq!((cnn.c2.out_channels(), cnn.fc.channels()), (c2 + k, c2 + k));
            let after = cnn.forward(x.clone()).as_vec();
            let e = scaled_change(&before, &after);
            assert!(
                e <= tol,
                "model {grown}, {init:?}: the output moved by {e:e}"
            );
        }
        grown += 1;
    }
}

#[test]
fn zeros_out_mirror_pairs_and_copy_halve_keep_a_cnns_output_f64() {
    exact_inits_keep_output::<f64>(110, 40, 1e-12);
}

#[test]
fn zeros_out_mirror_pairs_and_copy_halve_keep_a_cnns_output_f32() {
    exact_inits_keep_output::<f32>(111, 40, 1e-5);
}

#[test]
fn a_sites_parameters_per_unit_count_every_kernel_weight() {
    let mut rng = rng(120);
    let dev = Cpu::default();
    let c1 = Conv2d::<f64, Cpu>::with_kernel(3, 5, (3, 2), 1, 0, &dev, &mut rng).unwrap();
    let c2 = Conv2d::<f64, Cpu>::new(5, 7, 3, 1, 0, &dev, &mut rng).unwrap();
    let fc = FlatLinear::<f64, Cpu>::new(7, (4, 6), 10, &dev, &mut rng).unwrap();
    // Fan-in (3 * 3 * 2), bias, and fan-out in the next conv (7 * 3 * 3).
    assert_eq!(Site::new("c1", &c1, &[&c2]).params_per_unit, 18 + 1 + 63);
    // Fan-in (5 * 9), bias, and h * w columns per output of the head (10 * 24).
    assert_eq!(Site::new("c2", &c2, &[&fc]).params_per_unit, 45 + 1 + 240);
    assert_eq!(
        c2.forward_flops(6, 8),
        Some(4.0 * 6.0 * 7.0 * (2.0 * 45.0 + 1.0))
    );
    assert_eq!(c2.forward_flops(2, 8), None);
}

#[test]
fn output_and_input_norms_match_the_units_read_one_by_one() {
    let mut rng = rng(130);
    let dev = Cpu::default();
    let conv = Conv2d::<f64, Cpu>::with_kernel(3, 4, (2, 3), 1, 0, &dev, &mut rng).unwrap();
    let fc = FlatLinear::<f64, Cpu>::new(3, (2, 2), 5, &dev, &mut rng).unwrap();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    for layer in [&conv as &dyn Expandable<f64>, &fc] {
        let outs: Vec<f64> = (0..layer.out_width())
            .map(|u| {
                let (w, _) = layer.output_unit(u).unwrap();
                norm(&w)
            })
            .collect();
        let ins: Vec<f64> = (0..layer.in_width())
            .map(|u| norm(&layer.input_column(u).unwrap()))
            .collect();
        for (a, b) in layer.output_norms().iter().zip(&outs) {
            assert!((a - b).abs() <= 1e-12);
        }
        for (a, b) in layer.input_norms().iter().zip(&ins) {
            assert!((a - b).abs() <= 1e-12);
        }
        let biases: Vec<f64> = (0..layer.out_width())
            .map(|u| layer.output_unit(u).unwrap().1)
            .collect();
        assert_eq!(layer.output_biases(), biases);
        assert_eq!(
            (layer.output_norms().len(), layer.input_norms().len()),
            (layer.out_width(), layer.in_width())
        );
    }
}

/// `Data(x)` on the first convolution: the same output, weight and bias gradients as the
/// traced path (to rounding: the batch sum may run in another order) and as the nested loops.
fn data_input_matches<E: Real>(seed: u64, cases: usize, tol: f64) -> usize
where
    Cpu: Device<E>,
{
    let mut rng = rng(seed);
    let dev = Cpu::default();
    let mut bitwise = 0;
    for n in 0..cases {
        let case = Case::random(&mut rng);
        let (oh, ow) = case.out_hw();
        let r = uniform(case.b * case.o * oh * ow, &mut rng);
        let (y, _, dw, db) = case.reference(&r);
        let conv = case.conv::<E>(&dev);
        let x = case.input::<E>(&dev);
        // Gradients already in the buffers are added to.
        let mut grads = conv.try_alloc_grads().unwrap();
        cpu_slice::<E>(grads.get_or_alloc_mut(conv.bias()).unwrap())[0] = E::one();
        let out = conv.forward(Data(x.clone().traced(grads)));
        assert_eq!(*out.shape(), (case.b, case.o, oh, ow));
        let got_y = out.as_vec();
        let rt: Images<E, Cpu> = dev.tensor_from_vec(cast(&r), (case.b, case.o, oh, ow));
        let g = (out * rt).sum().backward();
        let (got_w, mut got_b) = (g.get(conv.weight()).as_vec(), g.get(conv.bias()).as_vec());
        got_b[0] -= E::one();
        for (name, a, b) in [("y", &got_y, &y), ("dw", &got_w, &dw), ("db", &got_b, &db)] {
            let e = rel_err(a, b);
            assert!(e <= tol, "case {n} {case:?}: {name} off by {e:e}");
        }
        let plain = ours::<E>(&case, &r, Path::Module);
        assert_eq!(got_y, plain.0, "the forward runs the same kernels");
        if got_w == plain.2 {
            bitwise += 1;
        }
    }
    bitwise
}

/// A CPU gradient buffer as a slice (generic code does not see that it is a vector).
fn cpu_slice<E: Dtype>(v: &mut <Cpu as Storage<E>>::Vec) -> &mut [E] {
    v
}

#[test]
fn data_input_gives_the_weight_and_bias_gradients_of_the_traced_path() {
    let same = data_input_matches::<f64>(140, 150, 1e-12);
    println!("{same} of 150 f64 weight gradients bit-identical to the traced path");
    data_input_matches::<f32>(141, 60, 1e-5);
}
