"""The main window: actions and layout. Everything it shows comes from a ``gui.session.Session`` (no Qt).

A stroke travels one way: canvas -> session (document, numbered drawing) -> rasterize (28x28) -> predictor
(interface + engine) -> session event -> views. The window maps actions to session methods and session events
to view updates; it computes nothing itself.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QSize, QStandardPaths, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QSlider,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

import nn_core
from gui import translations
from gui.activations import ActivationsView
from gui.calibration import CalibrationState, Reliability
from gui.canvas import MAX_PEN_WIDTH, MIN_PEN_WIDTH, DrawingCanvas
from gui.compare_view import open_compare
from gui.explain import ExplainState, ShownExplanation
from gui.graph_view import GraphView
from gui.model_opening import MEMORY, OpenedModel, dismantle
from gui.overlay import ExplainBar, saliency_image
from gui.prediction import Prediction
from gui.preview import InputPreview
from gui.probabilities import ProbabilitiesView
from gui.qt_bridge import QtDispatcher, shared_steps, wait_for
from gui.session import Session, bundled_model_path, clean_error
from gui.settings import AppSettings
from gui.summary import ModelSummary, scaling_description
from gui.teach_panel import TeachPanel
from gui.teaching import Teacher
from nn_core.interface import SCALINGS, ScalingReport

__all__ = ["APPLICATION", "ORGANIZATION", "MainWindow", "bundled_model_path"]

ORGANIZATION = "digitscope"
APPLICATION = "digitscope"
PEN_STEP = 1.25  # [ and ] change the pen width by this factor
BANNER_LIMIT = 600  # characters of an error shown in the banner (the tooltip has all of it)
MODEL_VIEWS = "window: model views"  # the Steps job that shows a new model in the views
REAP_MS, REAP_PATIENCE = 100, 50  # replaced models: look every 0.1 s whether they are unused, at most 5 s
IDLE_MS = 1500  # the reliability of a model is measured once nothing else has happened for this long


def _from_session(name: str, doc: str) -> property:
    """A read-only window attribute that is the session's (the window holds no state of its own)."""
    return property(lambda self: getattr(self.session, name), doc=doc)


class MainWindow(QMainWindow):
    """digitscope's window. ``model_path=None`` opens the bundled LeNet-5.

    ``settings`` defaults to ``QSettings(ORGANIZATION, APPLICATION)``; ``interactive`` allows modal dialogs
    (the About box, file pickers); errors are always shown inline, never in a blocking dialog.

    The constructor waits for its model (with the event loop running); a file that cannot be opened leaves
    the bundled model in place with the error shown. With ``open_in_background`` it waits for the bundled model
    only and opens ``model_path`` in the background, so a huge or hostile file named on the command line cannot
    keep the window from appearing.
    """

    def __init__(self, model_path: str | Path | None = None, settings: QSettings | None = None,
                 interactive: bool = False, predictor_mode: str = "auto", open_in_background: bool = False,
                 data_dir: str | Path | None = None) -> None:
        super().__init__()
        self.settings = settings if settings is not None else QSettings(ORGANIZATION, APPLICATION)
        self.interactive = interactive
        self.session = Session(AppSettings(self.settings), predictor_mode, QtDispatcher(self))
        self.canvas = DrawingCanvas(self.session.document, pen_width=self.session.settings.pen_width())
        self.probability_view = ProbabilitiesView()
        self.preview = InputPreview()
        self.activations = ActivationsView()
        # the activation cards' value ranges and pictures are made on the predictor's thread, for a traced run
        self.session.predictor.prepare = lambda prediction, cancelled: {
            "activations": self.activations.prepare(prediction.records, cancelled)}
        self.graph = GraphView()
        self.summary = ModelSummary()
        self.explaining = ExplainState(self.session)  # the saliency overlay's state and worker
        # the model view's reliability diagram, measured aside: when that view shows, or once the app is idle
        self.calibration = CalibrationState(self.session, wanted=False)
        # the user's taught examples and personal model: Qt's per-user app-data location unless given
        self.data_dir = Path(data_dir or QStandardPaths.writableLocation(
            QStandardPaths.StandardLocation.AppDataLocation) or Path.home() / ".digitscope")
        self.teacher = Teacher(self.session, self.data_dir)
        self.teach_panel = TeachPanel(self.teacher)

        self.setWindowTitle("digitscope")
        self.setAcceptDrops(True)
        self._build_actions()
        self._build_layout()
        self._build_status_bar()
        self._restore_state()
        self._connect()
        self._update_edit_actions()

        if model_path is None:
            self.open_model(bundled_model_path())
        elif open_in_background:
            self.open_model(bundled_model_path())  # something to draw on while the file loads
            self.open_model_async(model_path)
        elif not self.open_model(model_path) and self.model is None:
            error = self.session.last_error
            self.open_model(bundled_model_path())  # something to draw on, and the reason it is not the file
            if error:
                self.session.report_error(error)

    def _connect(self) -> None:
        events = self.session.events
        self._idle_timer = QTimer(self)
        self._idle_timer.setSingleShot(True)
        self._idle_timer.setInterval(IDLE_MS)
        self._idle_timer.timeout.connect(self._when_idle)
        # replaced models, let go of a piece per step once nothing works on them any more (see _reap)
        self._opened: OpenedModel | None = None
        self._retired: list[OpenedModel] = []
        self._reap_tries = 0
        self._prediction_waits = False  # a prediction arrived while the views were turning to its model
        self._reap_timer = QTimer(self)
        self._reap_timer.setInterval(REAP_MS)
        self._reap_timer.timeout.connect(self._reap)
        for event in (events.model_changed, events.scaling_changed, events.drawing_changed):
            event.connect(lambda *_args: self._idle_timer.start())  # (re)started: the app is busy now
        events.drawing_changed.connect(lambda _number: MEMORY.postpone())  # no heap trim under the pen
        shared_steps().before_turn = MEMORY.postpone  # nor while the UI works through views or a dismantled model
        events.opening.connect(self._show_opening)
        events.open_ended.connect(self._on_open_ended)
        events.model_changed.connect(self._on_model_changed)
        events.recent_changed.connect(lambda _recent: self._refresh_recent_menu())
        events.drawing_changed.connect(lambda _number: self._update_edit_actions())
        # after the session has predicted (or handed the drawing to the worker): are the bars behind?
        events.drawing_changed.connect(lambda _number: QTimer.singleShot(
            0, lambda: self.probability_view.set_computing(self.session.computing)))
        events.input_image.connect(self.preview.set_image)
        events.input_image.connect(lambda _image: self.activations.set_input_image(self.session.image))
        events.prediction.connect(self._on_prediction)
        events.scaling_changed.connect(self._on_scaling_changed)
        events.detecting.connect(self._on_detecting)
        events.detect_progress.connect(self._on_detect_progress)
        events.selection_changed.connect(self._on_selection_changed)
        events.scaling_detected.connect(self._on_scaling_detected)
        self.calibration.events.reliability.connect(self._on_reliability)
        self.calibration.events.measuring.connect(lambda _measuring: self._on_reliability(self.calibration.current))
        events.error.connect(self._show_error)
        self.canvas.strokesChanged.connect(self.session.drawing_changed)
        self.canvas.penWidthChanged.connect(self._on_pen_width_changed)
        self.canvas.eraserChanged.connect(self.eraser_action.setChecked)
        self.activations.nodeSelected.connect(self.session.select)
        self.explaining.events.explanation.connect(self._on_explanation)
        self.teach_panel.teachRequested.connect(self.teach)
        self.teach_panel.personalizeRequested.connect(lambda: self.personalize())
        self.teach_panel.saveRequested.connect(self._save_personal)
        self.teacher.events.personal_changed.connect(lambda _installed: self._show_title())
        self.session.events.model_changed.connect(lambda _opened: self._show_title())
        self.teacher.events.examples_changed.connect(
            lambda: self.statusBar().showMessage(self.tr("{count} examples taught").format(
                count=len(self.teacher.examples)), 3000))
        self.explaining.events.settings_changed.connect(self._sync_explain_widgets)
        self.probability_view.classClicked.connect(self.explain_class)
        self.probability_view.closeCallClicked.connect(lambda best, other: self.explain_class(best, other))
        self.explain_bar.methodChosen.connect(self.explaining.set_method)
        self.explain_bar.contrastChosen.connect(lambda c: self.explaining.set_target(self.explaining.target, c))
        self.graph.nodeSelected.connect(self._on_graph_node)
        self.tabs.currentChanged.connect(lambda _index: self._update_trace_wanted())
        self.tabs.currentChanged.connect(lambda _index: self.calibration.set_wanted(
            self.tabs.currentWidget() is self.summary))

    # --- public API (the session's state, for scripts and tests) -----------------------------------------
    document = _from_session("document", "The stroke document the canvas edits.")
    model = _from_session("model", "The current nn_core model, or None.")
    adapter = _from_session("adapter", "The current model's image <-> model interface (nn_core.interface).")
    model_path = _from_session("model_path", "The current model's file.")
    _model_key = _from_session("model_key", "The current model's settings key (follows its content).")
    predictor = _from_session("predictor", "The latest-input-wins predictor.")
    last_error = _from_session("last_error", "The last error shown, or None.")
    probabilities = _from_session("probabilities", "The latest class probabilities, or None when nothing is drawn.")

    @property
    def prediction(self) -> Prediction | None:
        return self.session.prediction if self.session.probabilities is not None else None

    def open_model(self, path: str | Path, timeout: float | None = None) -> bool:
        """Open a model and return once it is installed (True) or refused (False), the event loop running meanwhile.

        Opening happens on a worker thread (load, adapt, one trial run); the current model keeps working and
        stays on failure, with the error shown inline. False too when the open is cancelled, superseded by a
        later one, or not finished within ``timeout`` seconds. The UI's own opens use ``open_model_async``.
        """
        generation = self.session.open_model(path)
        self._wait_for_open(generation, timeout)
        shared_steps().finish()  # the views that show are built too (the UI's own opens build them between events)
        return bool(self.session.outcome(generation))

    def _when_idle(self) -> None:
        """Background work nobody is waiting for (the reliability diagram) starts once the app is idle."""
        session = self.session
        if session.opening is not None or session.detecting or not session.predictor.is_idle() \
                or shared_steps().pending():
            self._idle_timer.start()
            return
        self.calibration.measure_pending()

    def open_model_async(self, path: str | Path) -> None:
        """Start opening a model in the background and return at once (File > Open, drag and drop, recent)."""
        self.session.open_model(path)

    def wait_until_opened(self, timeout: float | None = None) -> bool | None:
        """Wait (event loop running) until the latest requested open has ended; returns how: True installed,
        False failed, cancelled or superseded; None on timeout."""
        generation = self.session._requested
        if not self._wait_for_open(generation, timeout):
            return None
        shared_steps().finish()
        return self.session.outcome(generation)

    def _wait_for_open(self, generation: int, timeout: float | None) -> bool:
        events = self.session.events

        def subscribe(callback):
            events.open_ended.connect(callback)
            return lambda: events.open_ended.disconnect(callback)

        return wait_for(lambda: self.session.outcome(generation) is not None, subscribe, timeout)

    @property
    def opening(self) -> Path | None:
        """The model file being opened, or None."""
        return self.session.opening

    def cancel_open(self) -> bool:
        """Give up on the open under way: its result is dropped when it arrives. Returns whether one was."""
        path = self.session.cancel_open()
        if path is None:
            return False
        self.statusBar().showMessage(self.tr("Cancelled opening {name}").format(name=path.name), 5000)
        return True

    # --- building the window -----------------------------------------------------------------------------
    def _action(self, text: str, slot, shortcuts: list | None = None, checkable: bool = False,
                tip: str | None = None) -> QAction:
        action = QAction(text, self)
        if shortcuts:
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setCheckable(checkable)
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        action.triggered.connect(slot)
        self.addAction(action)  # shortcuts work even for actions that are in no visible menu
        return action

    def _build_actions(self) -> None:
        self.open_action = self._action(self.tr("&Open model…"), self._choose_model, [QKeySequence.StandardKey.Open],
                                        tip=self.tr("Open an ONNX model (Ctrl+O)"))
        self.open_drawing_action = self._action(self.tr("Open &drawing…"), self._choose_drawing, ["Ctrl+Shift+O"])
        self.save_drawing_action = self._action(self.tr("&Save drawing…"), self._save_drawing, ["Ctrl+S"])
        self.quit_action = self._action(self.tr("&Quit"), self.close, [QKeySequence.StandardKey.Quit, "Ctrl+Q"])
        self.undo_action = self._action(self.tr("&Undo"), self.canvas.undo, ["Ctrl+Z"],
                                        tip=self.tr("Undo the last stroke (Ctrl+Z)"))
        self.redo_action = self._action(self.tr("&Redo"), self.canvas.redo, ["Ctrl+Shift+Z", "Ctrl+Y"],
                                        tip=self.tr("Redo (Ctrl+Shift+Z / Ctrl+Y)"))
        self.clear_action = self._action(self.tr("&Clear"), self.canvas.clear, ["Esc", "Delete", "Backspace"],
                                         tip=self.tr("Clear the canvas (Esc / Delete); undoable"))
        self.eraser_action = self._action(self.tr("&Eraser"), self.canvas.set_eraser, ["E"], checkable=True,
                                          tip=self.tr("Toggle the eraser (E)"))
        self.thinner_action = self._action(self.tr("Thinner pen"), lambda: self._scale_pen(1 / PEN_STEP), ["["],
                                           tip=self.tr("Thinner pen ([)"))
        self.thicker_action = self._action(self.tr("Thicker pen"), lambda: self._scale_pen(PEN_STEP), ["]"],
                                           tip=self.tr("Thicker pen (])"))
        self.autodetect_action = self._action(self.tr("&Auto-detect scaling"), self.auto_detect_scaling, ["Ctrl+D"],
                                              tip=self.tr("Try every input scaling on 50 MNIST digits and keep the "
                                                          "best (Ctrl+D)"))
        self.scaling_actions = []
        for number, code in enumerate(SCALINGS, start=1):
            action = self._action(self.tr("Scaling {code}: {description}").format(
                                  code=code, description=scaling_description(code)),
                                  lambda _=False, c=code: self.set_scaling(c), [f"Ctrl+{number}"], checkable=True)
            self.scaling_actions.append(action)
        self.show_activations_action = self._action(self.tr("&Activations"), lambda: self.tabs.setCurrentIndex(0),
                                                    ["Ctrl+Shift+A"])
        self.show_graph_action = self._action(self.tr("&Graph"), lambda: self.tabs.setCurrentIndex(1),
                                              ["Ctrl+Shift+G"])
        self.show_summary_action = self._action(self.tr("Model &summary"), lambda: self.tabs.setCurrentIndex(2),
                                                ["Ctrl+Shift+M"])
        self.explain_action = self._action(self.tr("E&xplain: why this digit?"), self.set_explaining, ["X"],
                                           checkable=True,
                                           tip=self.tr("Show which pixels pushed the prediction towards the class "
                                                       "(X); click a bar to explain that class"))
        self.teach_actions = [self._action(self.tr("It's a {digit}").format(digit=d),
                                           lambda _=False, d=d: self.teach(d), [str(d)],
                                           tip=self.tr("Label the drawing {digit} and keep it as your example "
                                                       "({digit})").format(digit=d))
                              for d in range(10)]
        self.personalize_action = self._action(self.tr("&Personalize on my examples"), lambda: self.personalize(),
                                               ["Ctrl+P"])
        self.about_action = self._action(self.tr("&About digitscope"), self._about, ["F1"])
        self.compare_action = self._action(self.tr("&Compare with…"), lambda: open_compare(self), ["Ctrl+Shift+C"],
                                           tip=self.tr("This model and another one side by side (Ctrl+Shift+C)"))

        menu = self.menuBar()
        file_menu = menu.addMenu(self.tr("&File"))
        file_menu.addAction(self.open_action)
        self.recent_menu = file_menu.addMenu(self.tr("Open &recent"))
        file_menu.addSeparator()
        file_menu.addAction(self.open_drawing_action)
        file_menu.addAction(self.save_drawing_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        edit_menu = menu.addMenu(self.tr("&Edit"))
        for action in (self.undo_action, self.redo_action, self.clear_action, None, self.eraser_action,
                       self.thinner_action, self.thicker_action):
            edit_menu.addSeparator() if action is None else edit_menu.addAction(action)
        model_menu = menu.addMenu(self.tr("&Model"))
        model_menu.addAction(self.autodetect_action)
        model_menu.addAction(self.personalize_action)
        model_menu.addAction(self.compare_action)
        model_menu.addSeparator()
        for action in self.scaling_actions:
            model_menu.addAction(action)
        view_menu = menu.addMenu(self.tr("&View"))
        view_menu.addAction(self.show_activations_action)
        view_menu.addAction(self.show_graph_action)
        view_menu.addSeparator()
        self.language_menu = view_menu.addMenu(self.tr("&Language"))
        self._build_language_menu()
        view_menu.addAction(self.show_summary_action)
        view_menu.addSeparator()
        view_menu.addAction(self.explain_action)
        help_menu = menu.addMenu(self.tr("&Help"))
        help_menu.addAction(self.about_action)
        self._refresh_recent_menu()

    def _build_language_menu(self) -> None:
        """System default or one of the shipped translations; the choice is kept and applies at the next start."""
        current = translations.chosen(self.settings)
        self.language_actions = {}
        choices = [(translations.SYSTEM, self.tr("System default"))] + [
            (code, translations.LANGUAGES.get(code, code)) for code in translations.available()]
        for code, text in choices:
            action = self.language_menu.addAction(text)
            action.setCheckable(True)
            action.setChecked(code == current)
            action.triggered.connect(lambda _=False, c=code: self.set_language(c))
            self.language_actions[code] = action

    def set_language(self, code: str) -> None:
        translations.choose(self.settings, code)
        for key, action in self.language_actions.items():
            action.setChecked(key == code)
        self.statusBar().showMessage(self.tr("The language changes when digitscope starts again"), 8000)

    def _tool_button(self, action: QAction) -> QToolButton:
        button = QToolButton()
        button.setDefaultAction(action)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        return button

    def _build_layout(self) -> None:
        toolbar = QHBoxLayout()
        toolbar.setContentsMargins(0, 0, 0, 0)
        for action in (self.undo_action, self.redo_action, self.clear_action, self.eraser_action):
            toolbar.addWidget(self._tool_button(action))
        toolbar.addWidget(QLabel(self.tr("Pen")))
        self.pen_slider = QSlider(Qt.Orientation.Horizontal)
        self.pen_slider.setRange(int(MIN_PEN_WIDTH), int(MAX_PEN_WIDTH))
        self.pen_slider.setValue(round(self.canvas.pen_width))
        self.pen_slider.setToolTip(self.tr("Pen width ([ and ])"))
        self.pen_slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.pen_slider.valueChanged.connect(lambda value: self.canvas.set_pen_width(value))
        toolbar.addWidget(self.pen_slider, 1)

        canvas_column = QWidget()
        canvas_layout = QVBoxLayout(canvas_column)
        canvas_layout.setContentsMargins(6, 6, 6, 6)
        canvas_layout.addLayout(toolbar)
        canvas_layout.addWidget(self.canvas, 1)
        self.explain_bar = ExplainBar(self.explain_action)
        canvas_layout.addWidget(self.explain_bar)

        scaling_row = QHBoxLayout()
        scaling_row.addWidget(QLabel(self.tr("Input scaling")))
        self.scaling_combo = QComboBox()
        for code in SCALINGS:
            self.scaling_combo.addItem(f"{code} — {scaling_description(code)}", code)
        self.scaling_combo.setToolTip(self.tr("How pixel values are scaled for this model (remembered per model)"))
        self.scaling_combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.scaling_combo.activated.connect(lambda index: self.set_scaling(self.scaling_combo.itemData(index)))
        scaling_row.addWidget(self.scaling_combo, 1)
        # "guessed": the file declares no scaling, so the one in use is auto-detected (or assumed)
        self.scaling_badge = QLabel()
        self.scaling_badge.setObjectName("scalingBadge")
        self.scaling_badge.setStyleSheet("#scalingBadge { background: #8a5a12; color: #fff3dc; border-radius: 6px;"
                                         " padding: 1px 6px; }")
        self.scaling_badge.hide()
        scaling_row.addWidget(self.scaling_badge)
        middle = QWidget()
        middle_layout = QVBoxLayout(middle)
        middle_layout.setContentsMargins(6, 6, 6, 6)
        middle_layout.addLayout(scaling_row)
        middle_layout.addWidget(self._tool_button(self.autodetect_action))
        middle_layout.addWidget(self.probability_view, 3)
        middle_layout.addWidget(self.preview, 2)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.activations, self.tr("Activations"))
        self.tabs.addTab(self.graph, self.tr("Graph"))
        self.tabs.addTab(self.summary, self.tr("Model"))
        self.tabs.addTab(self.teach_panel, self.tr("Teach"))

        self._fit_small_screens(canvas_column, middle)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(canvas_column)
        self.splitter.addWidget(middle)
        self.splitter.addWidget(self.tabs)
        self.splitter.setStretchFactor(0, 5)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setStretchFactor(2, 5)
        self.splitter.setSizes([520, 300, 460])

        # errors appear here, above everything, without blocking anything
        self.error_banner = QFrame()
        self.error_banner.setObjectName("errorBanner")
        self.error_banner.setStyleSheet("#errorBanner { background: #5a1d1d; border: 1px solid #a33; }"
                                        " QLabel { color: #ffdede; }")
        banner_layout = QHBoxLayout(self.error_banner)
        banner_layout.setContentsMargins(8, 4, 4, 4)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        dismiss = QToolButton()
        dismiss.setText(self.tr("✕"))
        dismiss.setToolTip(self.tr("Dismiss"))
        dismiss.clicked.connect(self.error_banner.hide)
        banner_layout.addWidget(self.error_label, 1)
        banner_layout.addWidget(dismiss)
        self.error_banner.hide()

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.error_banner)
        layout.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

    def _fit_small_screens(self, *columns: QWidget) -> None:
        """The window works from 800x600: combo boxes size to a few characters (the popup shows the full text),
        the pen slider and the side panels may get narrow."""
        for combo in self.findChildren(QComboBox) + [c for column in columns for c in column.findChildren(QComboBox)]:
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(6)
        self.pen_slider.setMinimumWidth(40)
        if getattr(self, "explain_bar", None) is not None:
            self.explain_bar.setMinimumWidth(min(self.explain_bar.minimumSizeHint().width(), 340))
        self.probability_view.setMinimumWidth(160)
        for page in (self.tabs.widget(i) for i in range(self.tabs.count())):
            page.setMinimumWidth(min(page.minimumSizeHint().width(), 200))

    def _build_status_bar(self) -> None:
        # shown while a model opens on the worker thread
        self.opening_label = QLabel()
        self.opening_progress = QProgressBar()
        self.opening_progress.setRange(0, 0)  # indeterminate: loading reports no progress
        self.opening_progress.setMaximumWidth(120)
        self.opening_progress.setMaximumHeight(14)
        self.opening_progress.setTextVisible(False)
        self.cancel_open_button = QToolButton()
        self.cancel_open_button.setText(self.tr("Cancel"))
        self.cancel_open_button.setToolTip(self.tr("Stop waiting for this model and keep the current one"))
        self.cancel_open_button.clicked.connect(self.cancel_open)
        # shown while auto-detect runs
        self.detect_progress = QProgressBar()
        self.detect_progress.setMaximumWidth(120)
        self.detect_progress.setMaximumHeight(14)
        self.detect_progress.setTextVisible(False)
        self.cancel_detect_button = QToolButton()
        self.cancel_detect_button.setText(self.tr("Cancel"))
        self.cancel_detect_button.setToolTip(self.tr("Stop auto-detecting the scaling"))
        self.cancel_detect_button.clicked.connect(self.cancel_detection)
        for widget in (self.opening_label, self.opening_progress, self.cancel_open_button, self.detect_progress,
                       self.cancel_detect_button):
            self.statusBar().addPermanentWidget(widget)
            widget.hide()
        self.model_label = QLabel(self.tr("no model"))
        self.timing_label = QLabel("")
        self.timing_label.setMinimumWidth(150)
        self.statusBar().addPermanentWidget(self.model_label)
        self.statusBar().addPermanentWidget(self.timing_label)

    def sizeHint(self) -> QSize:
        return QSize(1280, 800)

    # --- settings ----------------------------------------------------------------------------------------
    def _restore_state(self) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        splitter = self.settings.value("window/splitter")
        if isinstance(splitter, QByteArray) and not splitter.isEmpty():
            self.splitter.restoreState(splitter)

    def _save_state(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("window/splitter", self.splitter.saveState())
        self.session.settings.set_pen_width(self.canvas.pen_width)
        self.session.settings.sync()

    def recent_models(self) -> list[str]:
        return self.session.recent_models()

    def _refresh_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = [p for p in self.recent_models() if Path(p).exists()]
        for path in recent:
            action = self.recent_menu.addAction(Path(path).name)
            action.setToolTip(path)
            action.triggered.connect(lambda _=False, p=path: self.open_model_async(p))
        self.recent_menu.setEnabled(bool(recent))

    def closeEvent(self, event: QCloseEvent) -> None:
        self._save_state()
        self.session.close()  # a worker still loading finishes unseen (daemon thread)
        self.explaining.close()
        self.calibration.close()
        self.teacher.cancel()
        if self.activations.inspector is not None:
            self.activations.inspector.close()
        super().closeEvent(event)

    # --- model -------------------------------------------------------------------------------------------
    def _show_opening(self, path: Path) -> None:
        self.opening_label.setText(self.tr("Opening {name}…").format(name=path.name))
        self.opening_label.setToolTip(str(path))
        for widget in (self.opening_label, self.opening_progress, self.cancel_open_button):
            widget.show()

    def _on_open_ended(self, _generation: int, _ok: bool) -> None:
        if self.session.opening is None:
            for widget in (self.opening_label, self.opening_progress, self.cancel_open_button):
                widget.hide()

    def _on_model_changed(self, opened: OpenedModel) -> None:
        model, adapter, path = opened.model, opened.adapter, opened.path
        # The views follow one per event-loop turn: together they kept the UI thread 30-40 ms on DenseNet-121
        # (much more on a busy machine). A prediction for the new model finishes this first (_on_prediction).
        shared_steps().start(MODEL_VIEWS, self._model_views(opened), done=self._show_waiting_prediction)
        if self._opened is not None:
            self._retired.append(self._opened)
            self._reap_timer.start()
        self._opened = opened
        # Everything alive now (the app, its libraries, the model) lives long: frozen, Python's full collections
        # stop walking it. They took 50-80 ms with DenseNet open, holding the interpreter on whatever thread ran
        # them (the UI's or a worker's), so the UI stalled. A replaced model is still freed at once (nothing in
        # it is kept by a cycle); only cyclic garbage among frozen objects would wait (gc.unfreeze).
        gc.freeze()
        self._sync_scaling_widgets()
        self.error_banner.hide()
        self.model_label.setText(f"{path.name} · {adapter.layout.describe()}")
        self.model_label.setToolTip(str(path))
        self.setWindowTitle(f"{path.name} — digitscope")
        self.statusBar().showMessage(self.tr("Opened {name}: {nodes} nodes, {parameters} parameters").format(
            name=path.name, nodes=len(model.nodes), parameters=f"{model.parameter_count:,}"), 5000)

    def _reap(self) -> None:
        """Hand the replaced models to ``dismantle`` once the views show the new one and no run of the old one is
        under way (or after REAP_PATIENCE tries): what is still shared then is only let go, never taken apart."""
        self._reap_tries += 1
        busy = shared_steps().pending(MODEL_VIEWS) or not self.session.predictor.is_idle()
        if busy and self._reap_tries < REAP_PATIENCE:
            return
        self._reap_timer.stop()
        self._reap_tries = 0
        retired, self._retired = self._retired, []
        shared_steps().start(("retired models", id(retired)), dismantle([retired]))

    def _model_views(self, opened: OpenedModel) -> Iterator[None]:
        model, adapter, records = opened.model, opened.adapter, opened.trial.records
        self.summary.set_model(model, adapter)
        yield
        self.summary.set_shapes(records)
        yield
        self.activations.set_context(model, adapter)
        self.activations.set_records(records, has_values=False)
        yield
        self.graph.set_layout(opened.layout)
        self.graph.set_shapes(records)
        yield
        self.explain_bar.set_labels(adapter.labels(len(opened.trial.probabilities)))

    def _show_waiting_prediction(self) -> None:
        if self._prediction_waits:
            self._prediction_waits = False
            self._on_prediction(self.session.prediction if self.session.probabilities is not None else None)

    def set_scaling(self, code: str) -> None:
        """Use scaling ``code`` for the current model and remember the choice for this model."""
        self.session.set_scaling(code, "user")

    def _on_scaling_changed(self, _code: str, _source: str) -> None:
        shared_steps().finish(MODEL_VIEWS)  # the summary below is the current model's
        self._sync_scaling_widgets()
        if self.model is not None:
            self.summary.set_model(self.model, self.adapter)
            shown = self.session.prediction or self.session.trial
            if shown is not None:
                self.summary.set_shapes(shown.records)

    def _sync_scaling_widgets(self) -> None:
        code = self.adapter.scaling if self.adapter else None
        self.scaling_combo.setCurrentIndex(max(0, self.scaling_combo.findData(code)))
        for action, scaling in zip(self.scaling_actions, SCALINGS, strict=True):
            action.setChecked(scaling == code)
        if self.adapter is not None:
            self.scaling_combo.setToolTip(self.tr("How pixel values are scaled for this model (now: from "
                                                  "{source})").format(source=self.adapter.scaling_source))
        self._sync_scaling_badge()

    def _sync_scaling_badge(self) -> None:
        """The "guessed" badge: shown while the scaling in use is not the file's word or the user's choice."""
        session = self.session
        if session.guessing:
            text, tip = self.tr("guessing…"), self.tr("The file declares no input scaling: trying each one on 50 "
                                                      "MNIST test digits (choose one to stop)")
        elif session.scaling_guessed and self.adapter is not None:
            report = session.scaling_report
            if self.adapter.scaling_source == "default":
                text, tip = self.tr("guessed"), self.tr("The file declares no input scaling: 0..1 is assumed "
                                                        "(Ctrl+D auto-detects)")
            else:
                scores = "" if report is None else " (" + ", ".join(
                    f"{code} {report.accuracy[code] * 100:.0f}%" for code in SCALINGS) + ")"
                text, tip = self.tr("guessed"), self.tr(
                    "The file declares no input scaling: {scaling} was the best on the shipped MNIST "
                    "digits{scores}. Choose one to confirm it.").format(scaling=self.adapter.scaling, scores=scores)
        else:
            self.scaling_badge.hide()
            return
        self.scaling_badge.setText(text)
        self.scaling_badge.setToolTip(tip)
        self.scaling_badge.show()

    def auto_detect_scaling(self) -> None:
        self.session.auto_detect_scaling()
        self.autodetect_action.setEnabled(not self.session.detecting)

    def _on_detecting(self, running: bool) -> None:
        self.autodetect_action.setEnabled(not running or self.session.guessing)  # Ctrl+D keeps a guess's verdict
        self.detect_progress.setVisible(running)
        self.cancel_detect_button.setVisible(running)
        self._sync_scaling_badge()
        if running:
            self.detect_progress.setRange(0, 0)
            self.statusBar().showMessage(self.tr("Trying every input scaling on 50 MNIST test digits…"))

    def _on_detect_progress(self, done: int, total: int) -> None:
        self.detect_progress.setRange(0, total)
        self.detect_progress.setValue(done)

    def cancel_detection(self) -> None:
        if self.session.cancel_detection():
            self.statusBar().showMessage(self.tr("Auto-detect cancelled"), 5000)

    def _on_reliability(self, reliability: Reliability | None) -> None:
        self.summary.set_reliability(reliability, self.calibration.measuring, self.calibration.error)

    # --- selection: graph node <-> activation card <-> inspector -----------------------------------------
    def _on_graph_node(self, name: str, inspect: bool) -> None:
        self.session.select(name, -1)
        if inspect:
            self.activations.inspect(name)

    def _on_selection_changed(self, name: str | None, map_index: int) -> None:
        shared_steps().finish(MODEL_VIEWS)  # a node of the model the views show
        self.graph.select(name)
        card = self.activations.reveal(name)
        inspector = self.activations.inspector
        if card is not None and inspector is not None and inspector.isVisible() and card.primary is not None \
                and (inspector.node_name, inspector.map_index) != (name, map_index):
            inspector.show_card(card, map_index)

    def _update_trace_wanted(self) -> None:
        """The traced run (every node's outputs) is needed only while the activations or the graph show."""
        self.session.set_trace_wanted(self.tabs.currentWidget() in (self.activations, self.graph))

    def _on_scaling_detected(self, report: ScalingReport) -> None:
        scores = ", ".join(f"{code} {report.accuracy[code] * 100:.0f}%" for code in SCALINGS)
        self.statusBar().showMessage(self.tr("Scaling {best} is best on {samples} MNIST digits ({scores})").format(
            best=report.best, samples=report.samples, scores=scores), 10000)

    # --- prediction -> views -----------------------------------------------------------------------------
    def _on_prediction(self, prediction: Prediction | None) -> None:
        if shared_steps().pending(MODEL_VIEWS):
            # for the model the views are still turning to: shown when they are done (_model_views' end)
            self._prediction_waits = True
            return
        if prediction is None:  # nothing drawn
            self.probability_view.set_prediction(None)
            self.probability_view.set_computing(False)
            self.activations.clear_values()
            self.graph.set_activity(None)
            self.timing_label.setText("")
            return
        started = time.perf_counter()
        self.probability_view.set_prediction(prediction.probabilities, prediction.labels)
        self.probability_view.set_computing(self.session.computing)
        if prediction.traced:
            self.activations.set_records(prediction.records, prepared=prediction.prepared.get("activations"))
            self.graph.set_activity(prediction.activity)
        view_ms = (time.perf_counter() - started) * 1000
        self.timing_label.setText(self.tr("inference {engine} ms · views {views} ms").format(
            engine=f"{prediction.seconds * 1000:.2f}", views=f"{view_ms:.1f}"))

    # --- explain: the saliency overlay ---------------------------------------------------------------------
    @property
    def saliency(self):
        """The map (28x28 float, > 0 towards the class) for the class on screen (or the one picked), None on an
        empty canvas. Computed now if the overlay's worker has not delivered it yet."""
        shown = self.explaining.current()
        return None if shown is None else shown.map

    def set_explaining(self, on: bool) -> None:
        """Show or hide the overlay (X); while shown it follows the drawing, computed off the UI thread."""
        self.explaining.set_enabled(on)

    def explain_class(self, target: int, contrast: int | None = None) -> None:
        """Explain ``target`` (against ``contrast``); clicking the class already explained goes back to the one
        on screen."""
        if contrast is None and target == self.explaining.target:
            target = None
        self.explaining.set_target(target, contrast)
        self.set_explaining(True)

    def _sync_explain_widgets(self) -> None:
        state = self.explaining
        self.explain_action.setChecked(state.enabled)
        self.explain_bar.sync(state.method, state.contrast, state.enabled)
        if not state.enabled:
            self.canvas.set_overlay(None)

    def _on_explanation(self, shown: ShownExplanation | None) -> None:
        self.explain_bar.show_explanation(shown)
        if shown is None or shown.placement is None:
            self.canvas.set_overlay(None)
            return
        where = shown.placement
        self.canvas.set_overlay(saliency_image(shown.map), where.left, where.top, where.side)

    # --- teach: the user's examples and personal model ---------------------------------------------------
    def teach(self, label: int) -> None:
        """Label the current drawing ``label`` ("Wrong? It's a …"); kept as an example at once."""
        example = self.teacher.teach(int(label))
        if example is None:
            self.statusBar().showMessage(self.tr("Draw a digit first, then press its key to teach it"), 4000)

    def personalize(self, wait: bool = False) -> bool:
        """Fine-tune the current model on the taught examples in the background and install the result.

        ``wait=True`` blocks (event loop running) until it is done and returns whether the personal model is
        installed; otherwise returns whether it started. A model that cannot be trained is refused with the
        reason shown."""
        if not self.teacher.personalize():
            self.session.report_error(self.tr("Cannot personalize: {error}").format(error=self.teacher.last_error))
            return False
        self.tabs.setCurrentWidget(self.teach_panel)
        if not wait:
            return True
        events = self.teacher.events

        def subscribe(callback):
            events.personalizing.connect(callback)
            return lambda: events.personalizing.disconnect(callback)

        wait_for(lambda: not self.teacher.running, subscribe)
        return self.teacher.personal_installed

    def _show_title(self) -> None:
        if self.model_path is None:
            return
        if self.teacher.personal_installed and self.teacher.base is not None:
            self.setWindowTitle(self.tr("Personal model ({name} + {count} examples) — digitscope").format(
                name=self.teacher.base.path.name,
                count=self.teacher.personal.model.metadata.get("personal_examples", "?")))
        else:
            self.setWindowTitle(f"{self.model_path.name} — digitscope")

    def _save_personal(self) -> None:
        if self.teacher.personal is None:
            return
        suggested = str(self.data_dir / self.teacher.personal.path.name)
        path = suggested
        if self.interactive:
            path, _ = QFileDialog.getSaveFileName(self, self.tr("Save personal model"), suggested,
                                                  self.tr("ONNX models (*.onnx)"))
        if path:
            try:
                saved = self.teacher.save(path)
            except (OSError, ValueError) as exc:
                self.session.report_error(self.tr("Could not save the personal model: {error}").format(error=exc))
                return
            self.statusBar().showMessage(self.tr("Saved {path}").format(path=saved), 5000)

    # --- edit helpers ------------------------------------------------------------------------------------
    def _update_edit_actions(self) -> None:
        self.undo_action.setEnabled(self.document.can_undo())
        self.redo_action.setEnabled(self.document.can_redo())
        self.clear_action.setEnabled(bool(self.document.strokes))

    def _scale_pen(self, factor: float) -> None:
        self.canvas.set_pen_width(self.canvas.pen_width * factor)

    def _on_pen_width_changed(self, width: float) -> None:
        self.pen_slider.blockSignals(True)
        self.pen_slider.setValue(round(width))
        self.pen_slider.blockSignals(False)
        self.statusBar().showMessage(self.tr("Pen width {width}").format(width=f"{width:.0f}"), 1500)

    # --- files -------------------------------------------------------------------------------------------
    def _choose_model(self) -> None:
        start = str(self.model_path.parent) if self.model_path else ""
        path, _ = QFileDialog.getOpenFileName(self, self.tr("Open ONNX model"), start,
                                              self.tr("ONNX models (*.onnx);;All files (*)"))
        if path:
            self.open_model_async(path)

    def _choose_drawing(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, self.tr("Open drawing"), "",
                                              self.tr("Drawings (*.json);;All files (*)"))
        if path:
            self.open_drawing(path)

    def open_drawing(self, path: str | Path) -> bool:
        try:
            self.canvas.replace_document_from(str(path))
        except (OSError, ValueError) as exc:
            self.session.report_error(self.tr("Could not open drawing {name}: {error}").format(
                name=Path(path).name, error=clean_error(str(exc), path)))
            return False
        return True

    def _save_drawing(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, self.tr("Save drawing"), "digit.json",
                                              self.tr("Drawings (*.json)"))
        if path:
            try:
                self.document.save(path)
            except OSError as exc:
                self.session.report_error(self.tr("Could not save the drawing: {error}").format(error=exc))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        files = [url.toLocalFile() for url in event.mimeData().urls() if isinstance(url, QUrl) and url.isLocalFile()]
        if not files:
            return
        event.acceptProposedAction()
        path = files[0]
        # let the drop finish before loading (a big model would otherwise freeze the drag cursor)
        if path.lower().endswith(".json"):
            QTimer.singleShot(0, lambda: self.open_drawing(path))
        else:
            QTimer.singleShot(0, lambda: self.open_model_async(path))

    # --- messages ----------------------------------------------------------------------------------------
    def _show_error(self, message: str) -> None:
        shown = message if len(message) <= BANNER_LIMIT else message[:BANNER_LIMIT] + " …"
        self.error_label.setText(shown)
        self.error_label.setToolTip(message)
        self.error_banner.show()
        self.statusBar().showMessage(shown.splitlines()[0][:200], 15000)

    def _about(self) -> None:
        text = self.tr("<h3>digitscope</h3><p>Draw a digit and watch a neural network recognise it, layer by "
                       "layer.</p><p>Engine: nn_core {version} — written from scratch on NumPy; reads ONNX models."
                       "</p><p>Shortcuts: Ctrl+O open · Ctrl+Z undo · Ctrl+Shift+Z / Ctrl+Y redo · Esc / Delete "
                       "clear · E eraser · [ ] pen width · Ctrl+D auto-detect scaling · Ctrl+1…5 choose scaling · "
                       "Ctrl+Shift+G graph</p>").format(version=getattr(nn_core, "__version__", ""))
        if self.interactive:
            QMessageBox.about(self, self.tr("About digitscope"), text)
        else:
            self.statusBar().showMessage(self.tr("digitscope — draw a digit, watch the network think"), 5000)
