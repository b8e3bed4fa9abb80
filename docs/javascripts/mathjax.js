// MathJax 3 configuration, read before assets/mathjax/tex-chtml.js loads.
// Only the elements of these classes are typeset: arithmatex's output on the Markdown pages
// (\( \) and \[ \]), the notebooks' rendered Markdown cells ($ $ and $$ $$) and the navigation
// links, where notebook headings with maths appear.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|jp-MarkdownOutput|md-nav__link",
  },
};
