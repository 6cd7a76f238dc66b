//! Each op against candle's reference implementation: values and gradients, random shapes,
//! odd sizes, strides and paddings.

use candle_core::{Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};

use super::*;

fn random(shape: &[usize], rng: &mut impl Rng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

fn assert_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) -> Result<()> {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
    assert!(diff <= tol * scale, "{what}: max abs diff {diff} (scale {scale})");
    Ok(())
}

/// Candle's own NCHW conv2d as the reference, applied to the CBHW tensor.
fn reference_conv(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, padding: usize, groups: usize) -> Result<Tensor> {
    let (c_out, ..) = w.dims4()?;
    x.transpose(0, 1)?
        .contiguous()?
        .conv2d(w, padding, stride, 1, groups)?
        .broadcast_add(&b.reshape((1, c_out, 1, 1))?)?
        .transpose(0, 1)?
        .contiguous()
}

/// Our convolution against candle's values and direct gradient sums on random shapes;
/// `bf16`: inside [`with_bf16_matmul`] (the training path), with bf16's tolerance.
fn check_conv(bf16: bool, tolerance: f32) -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for case in 0..12 {
        let c_in = rng.random_range(1..6);
        let c_out = rng.random_range(1..7);
        let batch = rng.random_range(1..4);
        let k = [1, 3, 5][case % 3];
        let stride = 1 + case % 2;
        let padding = rng.random_range(0..=k / 2);
        let h = rng.random_range(k..k + 9);
        let w = rng.random_range(k..k + 9);
        let x = Var::from_tensor(&random(&[c_in, batch, h, w], &mut rng)?)?;
        let weight = Var::from_tensor(&random(&[c_out, c_in, k, k], &mut rng)?)?;
        let bias = Var::from_tensor(&random(&[c_out], &mut rng)?)?;
        let probe = random(&[c_out, batch, (h + 2 * padding - k) / stride + 1, (w + 2 * padding - k) / stride + 1], &mut rng)?;
        let (ours, grads) = with_bf16_matmul(bf16, || -> Result<_> {
            let ours = conv2d_cbhw(&x, &weight, Some(&bias), stride, padding)?;
            let grads = (&ours * &probe)?.sum_all()?.backward()?;
            Ok((ours, grads))
        })?;
        let reference = reference_conv(&x, &weight, &bias, stride, padding, 1)?;
        let what = format!("bf16 {bf16}, case {case}: c {c_in}->{c_out} b {batch} {h}x{w} k {k} s {stride} p {padding}");
        assert_close(&ours, &reference, tolerance, &what)?;
        // Gradients of <conv(x), probe> against direct sums (candle's own conv backward
        // fails on strided convolutions of odd sizes, so it cannot be the reference here).
        let (gx, gw, gb) = naive_conv_grads(&x, &weight, &probe, stride, padding)?;
        assert_close(grads.get(&x).expect("grad"), &gx, 10.0 * tolerance, &format!("{what}: grad input"))?;
        assert_close(grads.get(&weight).expect("grad"), &gw, 10.0 * tolerance, &format!("{what}: grad weight"))?;
        assert_close(grads.get(&bias).expect("grad"), &gb, 10.0 * tolerance, &format!("{what}: grad bias"))?;
    }
    Ok(())
}

#[test]
fn conv2d_matches_candle_values_and_gradients() -> Result<()> {
    check_conv(false, 1e-5)
}

#[cfg(feature = "train")]
#[test]
fn bf16_training_conv_matches_candle_within_bf16_error() -> Result<()> {
    if !gemm_bf16::available() {
        eprintln!("skipped: no AVX-512 BF16 on this CPU");
        return Ok(());
    }
    // bf16 keeps 8 bits of mantissa: errors of a few 2^-9 of the values' scale.
    check_conv(true, 2e-2)?;
    // The bf16 path really runs (its rounding shows), and outside the closure f32 is back.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let x = random(&[8, 2, 10, 10], &mut rng)?;
    let w = random(&[16, 8, 3, 3], &mut rng)?;
    let f32_out = conv2d_cbhw(&x, &w, None, 1, 1)?;
    let bf16_out = with_bf16_matmul(true, || conv2d_cbhw(&x, &w, None, 1, 1))?;
    let diff = (&f32_out - &bf16_out)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    assert!(diff > 0.0 && diff < 0.1, "bf16 vs f32: {diff}");
    assert_close(&conv2d_cbhw(&x, &w, None, 1, 1)?, &f32_out, 0.0, "f32 after the bf16 closure")?;
    Ok(())
}

/// d<conv(x, w) + b, probe>/d(x, w, b) by direct summation over every tap.
fn naive_conv_grads(x: &Tensor, w: &Tensor, probe: &Tensor, s: usize, p: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let (c_in, batch, h, wd) = x.dims4()?;
    let (c_out, _, k, _) = w.dims4()?;
    let (_, _, oh, ow) = probe.dims4()?;
    let xv = x.flatten_all()?.to_vec1::<f32>()?;
    let wv = w.flatten_all()?.to_vec1::<f32>()?;
    let pv = probe.flatten_all()?.to_vec1::<f32>()?;
    let (mut gx, mut gw, mut gb) = (vec![0f32; xv.len()], vec![0f32; wv.len()], vec![0f32; c_out]);
    for o in 0..c_out {
        for b in 0..batch {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = pv[((o * batch + b) * oh + oy) * ow + ox];
                    gb[o] += g;
                    for c in 0..c_in {
                        for ki in 0..k {
                            for kj in 0..k {
                                let iy = (oy * s + ki) as isize - p as isize;
                                let ix = (ox * s + kj) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
                                    continue;
                                }
                                let xi = ((c * batch + b) * h + iy as usize) * wd + ix as usize;
                                let wi = ((o * c_in + c) * k + ki) * k + kj;
                                gx[xi] += g * wv[wi];
                                gw[wi] += g * xv[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    let dev = &Device::Cpu;
    Ok((Tensor::from_vec(gx, x.dims(), dev)?, Tensor::from_vec(gw, w.dims(), dev)?, Tensor::from_vec(gb, c_out, dev)?))
}

#[test]
fn im2col_and_col2im_are_adjoint() -> Result<()> {
    // <im2col(x), y> == <x, col2im(y)> for every x, y: col2im is the exact transpose.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let g = Conv2dGeometry::new(3, 2, 7, 5, 3, 3, 2, 1)?;
    let x = random(&[3, 2, 7, 5], &mut rng)?;
    let cols = im2col(&x, g)?;
    let y = random(cols.dims(), &mut rng)?;
    let lhs = (&cols * &y)?.sum_all()?.to_scalar::<f32>()?;
    let rhs = (&x * col2im(&y, g)?)?.sum_all()?.to_scalar::<f32>()?;
    assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
    Ok(())
}

#[test]
fn max_pool_matches_candle_when_kernel_equals_stride() -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // Sizes divisible by the kernel: candle's backward mishandles the leftover rows.
    for (k, h, w) in [(2, 8, 6), (2, 12, 10), (3, 9, 12)] {
        let x = Var::from_tensor(&random(&[3, 2, h, w], &mut rng)?)?;
        let ours = max_pool2d(&x, k, k, 0)?;
        let reference = x.max_pool2d(k)?;
        assert_close(&ours, &reference, 0.0, "max_pool values")?;
        let probe = random(ours.dims(), &mut rng)?;
        let a = (&ours * &probe)?.sum_all()?.backward()?;
        let b = (&reference * &probe)?.sum_all()?.backward()?;
        // candle 0.11 multiplies the gradient by the window's mean of the max mask (1/k² for a
        // unique maximum) where it means to divide by the count of maxima: its gradient is k²
        // times too small. Ours (checked against direct sums below) is k² times candle's.
        let candle_rescaled = (b.get(&x).expect("grad") * (k * k) as f64)?;
        assert_close(a.get(&x).expect("grad"), &candle_rescaled, 1e-6, "max_pool grad")?;
    }
    Ok(())
}

#[test]
fn gpu_path_max_pool_matches_the_cpu_op_values_and_gradients() -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for (k, h, w) in [(2, 8, 6), (2, 48, 48), (3, 9, 12)] {
        let x = Var::from_tensor(&random(&[3, 2, h, w], &mut rng)?)?;
        let cpu = max_pool2d(&x, k, k, 0)?;
        let gpu = with_gpu_paths(|| max_pool2d(&x, k, k, 0))?;
        assert_close(&gpu, &cpu, 0.0, "gpu-path max_pool values")?;
        let probe = random(cpu.dims(), &mut rng)?;
        let a = (&cpu * &probe)?.sum_all()?.backward()?;
        let b = (&gpu * &probe)?.sum_all()?.backward()?;
        assert_close(b.get(&x).expect("grad"), a.get(&x).expect("grad"), 1e-6, "gpu-path max_pool grad")?;
    }
    Ok(())
}

/// Naive overlapping max-pool with -inf padding, and its gradient, for kernel != stride.
fn naive_pool(x: &[f32], h: usize, w: usize, k: usize, s: usize, p: usize) -> (Vec<f32>, Vec<usize>) {
    let oh = (h + 2 * p - k) / s + 1;
    let ow = (w + 2 * p - k) / s + 1;
    let mut out = Vec::new();
    let mut arg = Vec::new();
    for oy in 0..oh {
        for ox in 0..ow {
            let mut best = (f32::NEG_INFINITY, 0);
            for ki in 0..k {
                for kj in 0..k {
                    let (y, xx) = ((oy * s + ki) as isize - p as isize, (ox * s + kj) as isize - p as isize);
                    if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                        let i = y as usize * w + xx as usize;
                        if x[i] > best.0 {
                            best = (x[i], i);
                        }
                    }
                }
            }
            out.push(best.0);
            arg.push(best.1);
        }
    }
    (out, arg)
}

#[test]
fn overlapping_max_pool_matches_naive_values_and_gradients() -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for (k, s, p, h, w) in [(3, 2, 0, 9, 9), (3, 2, 1, 8, 11), (3, 1, 1, 5, 4), (5, 3, 2, 13, 7), (2, 2, 0, 7, 9)] {
        let x = Var::from_tensor(&random(&[2, 1, h, w], &mut rng)?)?;
        let ours = max_pool2d(&x, k, s, p)?;
        let probe = random(ours.dims(), &mut rng)?;
        let grad = (&ours * &probe)?.sum_all()?.backward()?;
        let grad = grad.get(&x).expect("grad").flatten_all()?.to_vec1::<f32>()?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let got = ours.flatten_all()?.to_vec1::<f32>()?;
        let probe = probe.flatten_all()?.to_vec1::<f32>()?;
        let mut expected_grad = vec![0f32; xs.len()];
        let mut expected = Vec::new();
        for plane in 0..2 {
            let (o, arg) = naive_pool(&xs[plane * h * w..][..h * w], h, w, k, s, p);
            let n = o.len();
            for (j, &a) in arg.iter().enumerate() {
                expected_grad[plane * h * w + a] += probe[plane * n + j];
            }
            expected.extend(o);
        }
        assert_eq!(got, expected, "values k{k} s{s} p{p}");
        for (a, b) in grad.iter().zip(&expected_grad) {
            assert!((a - b).abs() < 1e-6, "grad k{k} s{s} p{p}");
        }
    }
    Ok(())
}

#[test]
fn depthwise_matches_candle_grouped_conv() -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    for (c, b, h, w, k, s, p) in [(4, 2, 7, 9, 3, 1, 1), (3, 1, 8, 8, 3, 2, 1), (5, 3, 6, 5, 5, 1, 2), (2, 2, 5, 5, 3, 1, 0)] {
        let x = Var::from_tensor(&random(&[c, b, h, w], &mut rng)?)?;
        let weight = Var::from_tensor(&random(&[c, 1, k, k], &mut rng)?)?;
        let ours = depthwise_conv2d(&x, &weight, s, p)?;
        let zero = Tensor::zeros(c, candle_core::DType::F32, &Device::Cpu)?;
        let reference = reference_conv(&x, &weight, &zero, s, p, c)?;
        assert_close(&ours, &reference, 1e-5, "depthwise values")?;
        // candle has no grouped-conv backward: per-channel convolutions give the reference.
        let probe = random(ours.dims(), &mut rng)?;
        let g = (&ours * &probe)?.sum_all()?.backward()?;
        let mut per_channel = Vec::new();
        for ch in 0..c {
            let xc = x.narrow(0, ch, 1)?;
            let wc = weight.narrow(0, ch, 1)?;
            per_channel.push(reference_conv(&xc, &wc, &zero.narrow(0, 0, 1)?, s, p, 1)?);
        }
        let reference = Tensor::cat(&per_channel, 0)?;
        let g_ref = (&reference * &probe)?.sum_all()?.backward()?;
        assert_close(g.get(&x).expect("grad"), g_ref.get(&x).expect("grad"), 1e-4, "depthwise grad input")?;
        assert_close(g.get(&weight).expect("grad"), g_ref.get(&weight).expect("grad"), 1e-4, "depthwise grad weight")?;
    }
    Ok(())
}

#[cfg(feature = "train")]
#[test]
fn fused_batch_norm_relu_matches_candle_ops() -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    for (c, b, h, w) in [(3, 2, 5, 7), (1, 4, 3, 3), (6, 1, 9, 2)] {
        let x = Var::from_tensor(&(random(&[c, b, h, w], &mut rng)? * 3.0)?)?;
        let gamma = Var::from_tensor(&random(&[c], &mut rng)?)?;
        let beta = Var::from_tensor(&random(&[c], &mut rng)?)?;
        let (ours, mean, var) = batch_norm_relu_train(&x, &gamma, &beta, 1e-5)?;
        // Reference: the same formula as separate candle ops.
        let flat = x.reshape((c, ()))?;
        let mu = flat.mean_keepdim(1)?;
        let centered = flat.broadcast_sub(&mu)?;
        let v = centered.sqr()?.mean_keepdim(1)?;
        let reference = centered
            .broadcast_div(&(v.clone() + 1e-5)?.sqrt()?)?
            .broadcast_mul(&gamma.reshape((c, 1))?)?
            .broadcast_add(&beta.reshape((c, 1))?)?
            .relu()?
            .reshape((c, b, h, w))?;
        assert_close(&ours, &reference, 1e-5, "bn-relu values")?;
        assert_close(&Tensor::new(mean.as_slice(), &Device::Cpu)?, &mu.flatten_all()?, 1e-5, "mean")?;
        assert_close(&Tensor::new(var.as_slice(), &Device::Cpu)?, &v.flatten_all()?, 1e-5, "var")?;
        let probe = random(ours.dims(), &mut rng)?;
        let g_ours = (&ours * &probe)?.sum_all()?.backward()?;
        let g_ref = (&reference * &probe)?.sum_all()?.backward()?;
        for (name, t) in [("x", &x), ("gamma", &gamma), ("beta", &beta)] {
            assert_close(g_ours.get(t).expect("grad"), g_ref.get(t).expect("grad"), 1e-4, &format!("bn-relu grad {name}"))?;
        }
    }
    Ok(())
}

#[test]
fn ceil_mode_max_pool_matches_candle_on_edge_padded_input() -> Result<()> {
    // Ceil mode == floor mode on the input padded at the far edges by replication.
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    for (k, s, h, w) in [(2, 2, 7, 9), (3, 2, 10, 11), (3, 2, 22, 22), (2, 2, 6, 6)] {
        let x = random(&[3, 2, h, w], &mut rng)?;
        let ours = max_pool2d_ceil(&x, k, s)?;
        let pad = |n: usize| ((n - k).div_ceil(s) * s + k).saturating_sub(n);
        let padded = x.pad_with_same(2, 0, pad(h))?.pad_with_same(3, 0, pad(w))?;
        let reference = padded.max_pool2d_with_stride(k, s)?;
        assert_close(&ours, &reference, 0.0, &format!("ceil pool k{k} s{s} {h}x{w}"))?;
    }
    Ok(())
}

/// `prelu(x + b)` composed of candle ops, channel dim 0 (CBHW) or last (N, C).
fn reference_bias_prelu(x: &Tensor, b: &Tensor, a: &Tensor) -> Result<Tensor> {
    let c = a.dim(0)?;
    let shape: Vec<usize> = if x.rank() == 4 { vec![c, 1, 1, 1] } else { vec![1, c] };
    let x = x.broadcast_add(&b.reshape(shape.as_slice())?)?;
    x.relu()? - x.neg()?.relu()?.broadcast_mul(&a.reshape(shape.as_slice())?)?
}

#[test]
fn bias_prelu_matches_candle_ops_on_planes_and_rows() -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    for shape in [vec![5, 2, 7, 9], vec![3, 11], vec![1, 1, 1, 1]] {
        let c = if shape.len() == 4 { shape[0] } else { shape[1] };
        let x = random(&shape, &mut rng)?;
        let (b, a) = (random(&[c], &mut rng)?, random(&[c], &mut rng)?);
        assert_close(&bias_prelu(&x, Some(&b), &a)?, &reference_bias_prelu(&x, &b, &a)?, 1e-6, "bias_prelu")?;
        let gpu = with_gpu_paths(|| bias_prelu(&x, Some(&b), &a))?;
        assert_close(&gpu, &reference_bias_prelu(&x, &b, &a)?, 1e-6, "bias_prelu gpu path")?;
    }
    Ok(())
}

#[test]
fn direct_conv_matches_candle_for_wide_narrow_and_odd_shapes() -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    // Widths below, at and above the 16-pixel block, channel counts off the 4-channel block.
    for (c_in, c_out, batch, h, w, k) in
        [(3, 10, 1, 20, 40, 3), (3, 28, 3, 24, 24, 3), (10, 16, 2, 9, 18, 3), (16, 5, 1, 8, 8, 2), (2, 3, 2, 5, 17, 1)]
    {
        let x = random(&[c_in, batch, h, w], &mut rng)?;
        let wt = random(&[c_out, c_in, k, k], &mut rng)?;
        let (b, a) = (random(&[c_out], &mut rng)?, random(&[c_out], &mut rng)?);
        let ours = conv2d_bias_prelu(&x, &wt, Some(&b), &a)?;
        let conv = x.transpose(0, 1)?.contiguous()?.conv2d(&wt, 0, 1, 1, 1)?.transpose(0, 1)?.contiguous()?;
        assert_close(&ours, &reference_bias_prelu(&conv, &b, &a)?, 1e-5, "conv2d_bias_prelu")?;
    }
    Ok(())
}

#[test]
fn one_by_one_convolution_is_a_plain_product() -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    let x = random(&[6, 2, 5, 7], &mut rng)?;
    let (w, b) = (random(&[4, 6, 1, 1], &mut rng)?, random(&[4], &mut rng)?);
    assert_close(&conv2d_cbhw(&x, &w, Some(&b), 1, 0)?, &reference_conv(&x, &w, &b, 1, 0, 1)?, 1e-5, "1x1 conv")?;
    Ok(())
}

#[test]
fn padded_conv_bias_prelu_matches_candle_with_padding_and_stride() -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(24);
    // Direct path (stride 1, wide rows), GEMM path (narrow rows, stride 2).
    for (c_in, c_out, batch, h, w, k, stride, padding) in
        [(1, 16, 3, 20, 20, 3, 1, 1), (4, 6, 2, 9, 10, 3, 1, 1), (3, 5, 2, 11, 13, 3, 2, 1)]
    {
        let x = random(&[c_in, batch, h, w], &mut rng)?;
        let wt = random(&[c_out, c_in, k, k], &mut rng)?;
        let (b, a) = (random(&[c_out], &mut rng)?, random(&[c_out], &mut rng)?);
        let ours = conv2d_bias_prelu_padded(&x, &wt, Some(&b), &a, stride, padding)?;
        let conv = x.transpose(0, 1)?.contiguous()?.conv2d(&wt, padding, stride, 1, 1)?.transpose(0, 1)?.contiguous()?;
        assert_close(&ours, &reference_bias_prelu(&conv, &b, &a)?, 1e-5, "conv2d_bias_prelu_padded")?;
    }
    Ok(())
}
