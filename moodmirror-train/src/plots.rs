//! PNG plots of training and evaluation: loss/accuracy curves, confusion-matrix heatmap, ROC.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::evaluate::Report;
use moodmirror::draw::FONT_BYTES;
use moodmirror::emotion::CLASS_NAMES;

pub(crate) const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The only font: plotters' ab_glyph backend has no system fonts.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES);
    });
}

pub(crate) fn save_png(
    path: &Path,
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    register_font();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| anyhow!("plot buffer size"))?
        .save(path)
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

/// One row of training history.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub lr: f64,
    pub seconds: f64,
}

/// Loss and accuracy per epoch, train and val, side by side.
#[allow(clippy::type_complexity)] // the (name, accessor, panel) table of the two plots
pub fn training_curves(history: &[EpochRecord], path: &Path) -> Result<()> {
    save_png(path, 1200, 450, |root| {
        let (left, right) = root.split_horizontally(600);
        let epochs = history.len().max(2) as f64;
        let series: [(&str, fn(&EpochRecord) -> (f64, f64), _); 2] =
            [("loss", |r| (r.train_loss, r.val_loss), &left), ("accuracy", |r| (r.train_accuracy, r.val_accuracy), &right)];
        for (title, get, area) in series {
            let max = history.iter().map(|r| get(r).0.max(get(r).1)).fold(0.0f64, f64::max).max(1e-3) * 1.05;
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT, 22))
                .margin(12)
                .x_label_area_size(35)
                .y_label_area_size(50)
                .build_cartesian_2d(1.0..epochs, 0.0..max)
                .map_err(|e| anyhow!("{e}"))?;
            chart.configure_mesh().x_desc("epoch").label_style((FONT, 14)).draw().map_err(|e| anyhow!("{e}"))?;
            for (name, color, which) in [("train", BLUE, 0), ("val", RED, 1)] {
                chart
                    .draw_series(LineSeries::new(
                        history.iter().map(|r| {
                            let (t, v) = get(r);
                            (r.epoch as f64, if which == 0 { t } else { v })
                        }),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| anyhow!("{e}"))?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
            chart
                .configure_series_labels()
                .label_font((FONT, 14))
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
        }
        Ok(())
    })
}

/// Row-normalised confusion matrix with counts.
pub fn confusion_heatmap(report: &Report, path: &Path) -> Result<()> {
    let n = CLASS_NAMES.len();
    save_png(path, 760, 700, |root| {
        let absent = report.absent_classes();
        let title = if absent.is_empty() {
            format!("confusion matrix (accuracy {:.1}%)", report.accuracy * 100.0)
        } else {
            format!("confusion matrix (accuracy {:.1}%; absent: {})", report.accuracy * 100.0, absent.join(", "))
        };
        let root = root.titled(&title, (FONT, 22)).map_err(|e| anyhow!("{e}"))?;
        let (cell, x0, y0) = (80i32, 120i32, 40i32);
        for (r, row) in report.confusion.iter().enumerate() {
            let total: usize = row.iter().sum::<usize>().max(1);
            for (c, &count) in row.iter().enumerate() {
                let f = count as f64 / total as f64;
                let shade = (255.0 * (1.0 - f)) as u8;
                let (x, y) = (x0 + c as i32 * cell, y0 + r as i32 * cell);
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], RGBColor(shade, shade, 255).filled()))
                    .map_err(|e| anyhow!("{e}"))?;
                let color = if f > 0.5 { &WHITE } else { &BLACK };
                root.draw(&Text::new(format!("{count}"), (x + 10, y + 18), (FONT, 16).into_font().color(color)))
                    .map_err(|e| anyhow!("{e}"))?;
                root.draw(&Text::new(format!("{:.0}%", f * 100.0), (x + 10, y + 44), (FONT, 14).into_font().color(color)))
                    .map_err(|e| anyhow!("{e}"))?;
            }
            root.draw(&Text::new(CLASS_NAMES[r], (10, y0 + r as i32 * cell + 30), (FONT, 16))).map_err(|e| anyhow!("{e}"))?;
        }
        for (c, name) in CLASS_NAMES.iter().enumerate() {
            root.draw(&Text::new(*name, (x0 + c as i32 * cell + 6, y0 + n as i32 * cell + 8), (FONT, 15))).map_err(|e| anyhow!("{e}"))?;
        }
        root.draw(&Text::new("rows: true class, columns: predicted", (x0, y0 + n as i32 * cell + 34), (FONT, 15)))
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}

/// A chart over 0..1 x 0..1 with its caption and axis names (ROC curves, reliability).
fn unit_square_chart<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>>
{
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FONT, 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(|e| anyhow!("{e}"))?;
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).label_style((FONT, 14)).draw().map_err(|e| anyhow!("{e}"))?;
    Ok(chart)
}

/// The legend of a [`unit_square_chart`], boxed, at `position`.
fn draw_legend<'a, 'b: 'a>(
    chart: &mut ChartContext<
        'a,
        BitMapBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 14))
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(|e| anyhow!("{e}"))
}

/// ROC curves per class and micro-average, AUC in the legend.
#[allow(clippy::type_complexity)] // (label, points, colour, width) per curve
pub fn roc_curves(report: &Report, path: &Path) -> Result<()> {
    save_png(path, 760, 700, |root| {
        let mut chart = unit_square_chart(root, "ROC curves (one vs rest)", "false positive rate", "true positive rate")?;
        let mut curves: Vec<(String, &Vec<(f64, f64)>, RGBColor, u32)> = CLASS_NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let auc = report.per_class[*name].roc_auc;
                let (r, g, b) = moodmirror::draw::EMOTION_COLORS[i];
                (format!("{name} (AUC {auc:.3})"), &report.roc_per_class[i], RGBColor(r, g, b), 2)
            })
            .collect();
        curves.push((format!("micro-average (AUC {:.3})", report.roc_auc_micro), &report.roc_micro, BLACK, 3));
        for (label, points, color, width) in curves {
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(width)))
                .map_err(|e| anyhow!("{e}"))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
        }
        chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3))).map_err(|e| anyhow!("{e}"))?;
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// Reliability diagram: per confidence bin, the share of top labels that were right (bars)
/// against the diagonal a calibrated model follows, with each bin's share of the images.
pub fn reliability_diagram(report: &Report, path: &Path) -> Result<()> {
    save_png(path, 700, 700, |root| {
        let caption = format!("Reliability (top label): ECE {:.4}, {} images", report.ece, report.n);
        let mut chart = unit_square_chart(root, &caption, "confidence (top label's probability)", "accuracy")?;
        let n = report.n.max(1) as f64;
        let blue = RGBColor(60, 110, 200);
        chart
            .draw_series(
                report
                    .reliability
                    .iter()
                    .filter(|b| b.count > 0)
                    .map(|b| Rectangle::new([(b.lower, 0.0), (b.upper, b.accuracy)], blue.mix(0.75).filled())),
            )
            .map_err(|e| anyhow!("{e}"))?
            .label("accuracy in the bin")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], blue.mix(0.75).filled()));
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(report.reliability.iter().filter(|b| b.count > 0).map(|b| {
                let share = b.count as f64 / n;
                Rectangle::new([(b.lower + 0.02, 0.0), (b.upper - 0.02, share)], grey.mix(0.6).filled())
            }))
            .map_err(|e| anyhow!("{e}"))?
            .label("share of images in the bin")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], grey.mix(0.6).filled()));
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label("calibrated")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        chart
            .draw_series(
                report.reliability.iter().filter(|b| b.count > 0).map(|b| Circle::new((b.confidence, b.accuracy), 4, RED.filled())),
            )
            .map_err(|e| anyhow!("{e}"))?
            .label("mean confidence, accuracy")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, RED.filled()));
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}
