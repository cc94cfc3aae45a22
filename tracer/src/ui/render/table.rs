//! What the two list pages (hosts and connections) share: columns that drop out when the
//! terminal is narrow, right-aligned cells, scrolling to the selection, a titled block.

use ratatui::{text::Line, widgets::Block};

use super::HEAD;
use crate::ui::state::UiState;

/// A column: its title, width, and whether it may be dropped when space is short (higher
/// goes first; 0 never).
pub(super) struct Col {
    pub(super) title: &'static str,
    pub(super) width: u16,
    pub(super) drop: u8,
}

/// Which columns fit in `width` besides `flex_min` for the flexible ones, dropping the most
/// droppable first. Returns the kept indices and the width left for the flexible columns.
pub(super) fn fit_columns(
    cols: &[Col],
    width: u16,
    flex_min: u16,
    flex_count: u16,
) -> (Vec<usize>, u16) {
    let mut kept: Vec<usize> = (0..cols.len()).collect();
    loop {
        let fixed: u16 = kept.iter().map(|&i| cols[i].width + 1).sum();
        let needed = fixed + flex_min + flex_count.saturating_sub(1);
        if needed <= width {
            return (kept, width - fixed - flex_count.saturating_sub(1));
        }
        let Some(worst) = kept
            .iter()
            .copied()
            .filter(|&i| cols[i].drop > 0)
            .max_by_key(|&i| (cols[i].drop, i))
        else {
            return (kept, flex_min.min(width));
        };
        kept.retain(|&i| i != worst);
    }
}

pub(super) fn right(s: String, width: u16) -> String {
    format!("{s:>w$}", w = width as usize)
}

/// The row window that keeps `selected` visible in `height` rows.
pub(super) fn scroll(selected: usize, height: usize) -> usize {
    if height == 0 {
        0
    } else {
        selected.saturating_sub(height - 1)
    }
}

pub(super) fn filters_text(ui: &UiState, sort: &str) -> String {
    let mut t = format!(" sort: {sort} · reason: {} ", ui.reason_filter.label());
    if !ui.host_filter.is_empty() {
        t.push_str(&format!("· filter: {} ", ui.host_filter));
    }
    t
}

/// A bordered block with `title` on the left and `right` on the right when both fit.
pub(super) fn titled<'a>(title: String, right: String, width: u16) -> Block<'a> {
    let fits = title.chars().count() + right.chars().count() + 4 <= width as usize;
    let block = Block::bordered().title(Line::styled(title, HEAD));
    if fits {
        block.title_top(Line::from(right).right_aligned())
    } else {
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrolling_and_columns() {
        assert_eq!(scroll(3, 10), 0);
        assert_eq!(scroll(15, 10), 6);
        let cols = [
            Col {
                title: "A",
                width: 5,
                drop: 0,
            },
            Col {
                title: "B",
                width: 5,
                drop: 1,
            },
            Col {
                title: "C",
                width: 5,
                drop: 2,
            },
        ];
        assert_eq!(fit_columns(&cols, 40, 10, 1), (vec![0, 1, 2], 22));
        assert_eq!(fit_columns(&cols, 25, 10, 1), (vec![0, 1], 13));
        assert_eq!(
            fit_columns(&cols, 12, 10, 1),
            (vec![0], 10),
            "too narrow: the flexible column gets its minimum"
        );
    }
}
