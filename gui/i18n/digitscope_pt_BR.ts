<?xml version='1.0' encoding='utf-8'?>
<!DOCTYPE TS>
<TS version="2.1" language="pt_BR" sourcelanguage="en">
  <context>
    <name>InputPreview</name>
    <message>
      <location filename="../preview.py" line="23" />
      <source>model input</source>
      <translation>entrada do modelo</translation>
    </message>
    <message>
      <location filename="../preview.py" line="26" />
      <source>The image the model receives, one square per input pixel</source>
      <translation>A imagem que o modelo recebe, um quadrado por pixel de entrada</translation>
    </message>
    <message>
      <location filename="../preview.py" line="36" />
      <source>model input {width}×{height}</source>
      <translation>entrada do modelo {width}×{height}</translation>
    </message>
  </context>
  <context>
    <name>Inspector</name>
    <message>
      <location filename="../activations.py" line="563" />
      <location filename="../activations.py" line="603" />
      <source>Hover over a cell to read its value</source>
      <translation>Passe o mouse sobre uma célula para ler o valor</translation>
    </message>
    <message>
      <location filename="../activations.py" line="565" />
      <source>◀ Previous map</source>
      <translation>◀ Mapa anterior</translation>
    </message>
    <message>
      <location filename="../activations.py" line="568" />
      <source>Next map ▶</source>
      <translation>Próximo mapa ▶</translation>
    </message>
    <message>
      <location filename="../activations.py" line="643" />
      <source>%1 %2 %3 — map %4 of %5</source>
      <translation>%1 %2 %3 — mapa %4 de %5</translation>
    </message>
    <message>
      <location filename="../activations.py" line="645" />
      <source>map %1 of %2</source>
      <translation>mapa %1 de %2</translation>
    </message>
    <message>
      <location filename="../activations.py" line="664" />
      <source>%1 %2 %3 — %4 values</source>
      <translation>%1 %2 %3 — %4 valores</translation>
    </message>
    <message>
      <location filename="../activations.py" line="679" />
      <source>No weights</source>
      <translation>Sem pesos</translation>
    </message>
    <message>
      <location filename="../activations.py" line="688" />
      <source>Weights %1: %2 (%3 … %4)</source>
      <translation>Pesos %1: %2 (%3 … %4)</translation>
    </message>
    <message>
      <location filename="../activations.py" line="702" />
      <source>Receptive field: unknown for this node</source>
      <translation>Campo receptivo: desconhecido para este nó</translation>
    </message>
    <message>
      <location filename="../activations.py" line="706" />
      <source>Unit (%1, %2) sees input rows %3–%4, columns %5–%6</source>
      <translation>A unidade (%1, %2) vê as linhas %3–%4 e as colunas %5–%6 da entrada</translation>
    </message>
  </context>
  <context>
    <name>MainWindow</name>
    <message>
      <location filename="../window.py" line="146" />
      <source>{count} examples taught</source>
      <translation>{count} exemplos ensinados</translation>
    </message>
    <message>
      <location filename="../window.py" line="212" />
      <source>Cancelled opening {name}</source>
      <translation>Abertura de {name} cancelada</translation>
    </message>
    <message>
      <location filename="../window.py" line="231" />
      <source>&amp;Open model…</source>
      <translation>&amp;Abrir modelo…</translation>
    </message>
    <message>
      <location filename="../window.py" line="232" />
      <source>Open an ONNX model (Ctrl+O)</source>
      <translation>Abrir um modelo ONNX (Ctrl+O)</translation>
    </message>
    <message>
      <location filename="../window.py" line="233" />
      <source>Open &amp;drawing…</source>
      <translation>Abrir &amp;desenho…</translation>
    </message>
    <message>
      <location filename="../window.py" line="234" />
      <source>&amp;Save drawing…</source>
      <translation>&amp;Salvar desenho…</translation>
    </message>
    <message>
      <location filename="../window.py" line="235" />
      <source>&amp;Quit</source>
      <translation>Sai&amp;r</translation>
    </message>
    <message>
      <location filename="../window.py" line="236" />
      <source>&amp;Undo</source>
      <translation>Des&amp;fazer</translation>
    </message>
    <message>
      <location filename="../window.py" line="237" />
      <source>Undo the last stroke (Ctrl+Z)</source>
      <translation>Desfazer o último traço (Ctrl+Z)</translation>
    </message>
    <message>
      <location filename="../window.py" line="238" />
      <source>&amp;Redo</source>
      <translation>&amp;Refazer</translation>
    </message>
    <message>
      <location filename="../window.py" line="239" />
      <source>Redo (Ctrl+Shift+Z / Ctrl+Y)</source>
      <translation>Refazer (Ctrl+Shift+Z / Ctrl+Y)</translation>
    </message>
    <message>
      <location filename="../window.py" line="240" />
      <source>&amp;Clear</source>
      <translation>&amp;Limpar</translation>
    </message>
    <message>
      <location filename="../window.py" line="241" />
      <source>Clear the canvas (Esc / Delete); undoable</source>
      <translation>Limpar a tela (Esc / Delete); pode ser desfeito</translation>
    </message>
    <message>
      <location filename="../window.py" line="242" />
      <source>&amp;Eraser</source>
      <translation>&amp;Borracha</translation>
    </message>
    <message>
      <location filename="../window.py" line="243" />
      <source>Toggle the eraser (E)</source>
      <translation>Ligar/desligar a borracha (E)</translation>
    </message>
    <message>
      <location filename="../window.py" line="244" />
      <source>Thinner pen</source>
      <translation>Caneta mais fina</translation>
    </message>
    <message>
      <location filename="../window.py" line="245" />
      <source>Thinner pen ([)</source>
      <translation>Caneta mais fina ([)</translation>
    </message>
    <message>
      <location filename="../window.py" line="246" />
      <source>Thicker pen</source>
      <translation>Caneta mais grossa</translation>
    </message>
    <message>
      <location filename="../window.py" line="247" />
      <source>Thicker pen (])</source>
      <translation>Caneta mais grossa (])</translation>
    </message>
    <message>
      <location filename="../window.py" line="248" />
      <source>&amp;Auto-detect scaling</source>
      <translation>&amp;Detectar escala automaticamente</translation>
    </message>
    <message>
      <location filename="../window.py" line="249" />
      <source>Try every input scaling on 50 MNIST digits and keep the best (Ctrl+D)</source>
      <translation>Testar todas as escalas de entrada em 50 dígitos do MNIST e ficar com a melhor (Ctrl+D)</translation>
    </message>
    <message>
      <location filename="../window.py" line="253" />
      <source>Scaling {code}: {description}</source>
      <translation>Escala {code}: {description}</translation>
    </message>
    <message>
      <location filename="../window.py" line="257" />
      <source>&amp;Activations</source>
      <translation>&amp;Ativações</translation>
    </message>
    <message>
      <location filename="../window.py" line="259" />
      <source>&amp;Graph</source>
      <translation>&amp;Grafo</translation>
    </message>
    <message>
      <location filename="../window.py" line="261" />
      <source>Model &amp;summary</source>
      <translation>&amp;Resumo do modelo</translation>
    </message>
    <message>
      <location filename="../window.py" line="263" />
      <source>E&amp;xplain: why this digit?</source>
      <translation>E&amp;xplicar: por que este dígito?</translation>
    </message>
    <message>
      <location filename="../window.py" line="265" />
      <source>Show which pixels pushed the prediction towards the class (X); click a bar to explain that class</source>
      <translation>Mostrar quais pixels levaram a previsão para a classe (X); clique numa barra para explicar essa classe</translation>
    </message>
    <message>
      <location filename="../window.py" line="267" />
      <source>It's a {digit}</source>
      <translation>É um {digit}</translation>
    </message>
    <message>
      <location filename="../window.py" line="269" />
      <source>Label the drawing {digit} and keep it as your example ({digit})</source>
      <translation>Rotular o desenho como {digit} e guardá-lo como seu exemplo ({digit})</translation>
    </message>
    <message>
      <location filename="../window.py" line="272" />
      <source>&amp;Personalize on my examples</source>
      <translation>&amp;Personalizar com meus exemplos</translation>
    </message>
    <message>
      <location filename="../window.py" line="274" />
      <source>&amp;About digitscope</source>
      <translation>&amp;Sobre o digitscope</translation>
    </message>
    <message>
      <location filename="../window.py" line="277" />
      <source>&amp;File</source>
      <translation>&amp;Arquivo</translation>
    </message>
    <message>
      <location filename="../window.py" line="279" />
      <source>Open &amp;recent</source>
      <translation>Abrir &amp;recente</translation>
    </message>
    <message>
      <location filename="../window.py" line="285" />
      <source>&amp;Edit</source>
      <translation>&amp;Editar</translation>
    </message>
    <message>
      <location filename="../window.py" line="289" />
      <source>&amp;Model</source>
      <translation>&amp;Modelo</translation>
    </message>
    <message>
      <location filename="../window.py" line="295" />
      <source>&amp;View</source>
      <translation>E&amp;xibir</translation>
    </message>
    <message>
      <location filename="../window.py" line="299" />
      <source>&amp;Language</source>
      <translation>&amp;Idioma</translation>
    </message>
    <message>
      <location filename="../window.py" line="304" />
      <source>&amp;Help</source>
      <translation>Aj&amp;uda</translation>
    </message>
    <message>
      <location filename="../window.py" line="312" />
      <source>System default</source>
      <translation>Padrão do sistema</translation>
    </message>
    <message>
      <location filename="../window.py" line="325" />
      <source>The language changes when digitscope starts again</source>
      <translation>O idioma muda quando o digitscope for aberto de novo</translation>
    </message>
    <message>
      <location filename="../window.py" line="338" />
      <source>Pen</source>
      <translation>Caneta</translation>
    </message>
    <message>
      <location filename="../window.py" line="342" />
      <source>Pen width ([ and ])</source>
      <translation>Espessura da caneta ([ e ])</translation>
    </message>
    <message>
      <location filename="../window.py" line="356" />
      <source>Input scaling</source>
      <translation>Escala da entrada</translation>
    </message>
    <message>
      <location filename="../window.py" line="360" />
      <source>How pixel values are scaled for this model (remembered per model)</source>
      <translation>Como os valores dos pixels são escalados para este modelo (lembrado por modelo)</translation>
    </message>
    <message>
      <location filename="../window.py" line="373" />
      <source>Activations</source>
      <translation>Ativações</translation>
    </message>
    <message>
      <location filename="../window.py" line="374" />
      <source>Graph</source>
      <translation>Grafo</translation>
    </message>
    <message>
      <location filename="../window.py" line="375" />
      <source>Model</source>
      <translation>Modelo</translation>
    </message>
    <message>
      <location filename="../window.py" line="376" />
      <source>Teach</source>
      <translation>Ensinar</translation>
    </message>
    <message>
      <location filename="../window.py" line="398" />
      <source>✕</source>
      <translation>✕</translation>
    </message>
    <message>
      <location filename="../window.py" line="399" />
      <source>Dismiss</source>
      <translation>Fechar</translation>
    </message>
    <message>
      <location filename="../window.py" line="422" />
      <location filename="../window.py" line="431" />
      <source>Cancel</source>
      <translation>Cancelar</translation>
    </message>
    <message>
      <location filename="../window.py" line="423" />
      <source>Stop waiting for this model and keep the current one</source>
      <translation>Parar de esperar por este modelo e manter o atual</translation>
    </message>
    <message>
      <location filename="../window.py" line="432" />
      <source>Stop auto-detecting the scaling</source>
      <translation>Parar a detecção automática da escala</translation>
    </message>
    <message>
      <location filename="../window.py" line="438" />
      <source>no model</source>
      <translation>nenhum modelo</translation>
    </message>
    <message>
      <location filename="../window.py" line="491" />
      <source>Opening {name}…</source>
      <translation>Abrindo {name}…</translation>
    </message>
    <message>
      <location filename="../window.py" line="515" />
      <source>Opened {name}: {nodes} nodes, {parameters} parameters</source>
      <translation>{name} aberto: {nodes} nós, {parameters} parâmetros</translation>
    </message>
    <message>
      <location filename="../window.py" line="536" />
      <source>How pixel values are scaled for this model (now: from {source})</source>
      <translation>Como os valores dos pixels são escalados para este modelo (agora: por {source})</translation>
    </message>
    <message>
      <location filename="../window.py" line="548" />
      <source>Trying every input scaling on 50 MNIST test digits…</source>
      <translation>Testando todas as escalas de entrada em 50 dígitos de teste do MNIST…</translation>
    </message>
    <message>
      <location filename="../window.py" line="556" />
      <source>Auto-detect cancelled</source>
      <translation>Detecção automática cancelada</translation>
    </message>
    <message>
      <location filename="../window.py" line="578" />
      <source>Scaling {best} is best on {samples} MNIST digits ({scores})</source>
      <translation>A escala {best} é a melhor em {samples} dígitos do MNIST ({scores})</translation>
    </message>
    <message>
      <location filename="../window.py" line="597" />
      <source>inference {engine} ms · views {views} ms</source>
      <translation>inferência {engine} ms · telas {views} ms</translation>
    </message>
    <message>
      <location filename="../window.py" line="640" />
      <source>Draw a digit first, then press its key to teach it</source>
      <translation>Desenhe um dígito primeiro e depois aperte a tecla dele para ensiná-lo</translation>
    </message>
    <message>
      <location filename="../window.py" line="649" />
      <source>Cannot personalize: {error}</source>
      <translation>Não foi possível personalizar: {error}</translation>
    </message>
    <message>
      <location filename="../window.py" line="684" />
      <source>Could not save the personal model: {error}</source>
      <translation>Não foi possível salvar o modelo pessoal: {error}</translation>
    </message>
    <message>
      <location filename="../window.py" line="686" />
      <source>Saved {path}</source>
      <translation>{path} salvo</translation>
    </message>
    <message>
      <location filename="../window.py" line="701" />
      <source>Pen width {width}</source>
      <translation>Espessura da caneta {width}</translation>
    </message>
    <message>
      <location filename="../window.py" line="706" />
      <source>Open ONNX model</source>
      <translation>Abrir modelo ONNX</translation>
    </message>
    <message>
      <location filename="../window.py" line="707" />
      <source>ONNX models (*.onnx);;All files (*)</source>
      <translation>Modelos ONNX (*.onnx);;Todos os arquivos (*)</translation>
    </message>
    <message>
      <location filename="../window.py" line="712" />
      <source>Open drawing</source>
      <translation>Abrir desenho</translation>
    </message>
    <message>
      <location filename="../window.py" line="713" />
      <source>Drawings (*.json);;All files (*)</source>
      <translation>Desenhos (*.json);;Todos os arquivos (*)</translation>
    </message>
    <message>
      <location filename="../window.py" line="721" />
      <source>Could not open drawing {name}: {error}</source>
      <translation>Não foi possível abrir o desenho {name}: {error}</translation>
    </message>
    <message>
      <location filename="../window.py" line="727" />
      <source>Save drawing</source>
      <translation>Salvar desenho</translation>
    </message>
    <message>
      <location filename="../window.py" line="728" />
      <source>Drawings (*.json)</source>
      <translation>Desenhos (*.json)</translation>
    </message>
    <message>
      <location filename="../window.py" line="733" />
      <source>Could not save the drawing: {error}</source>
      <translation>Não foi possível salvar o desenho: {error}</translation>
    </message>
    <message>
      <location filename="../window.py" line="760" />
      <source>&lt;h3&gt;digitscope&lt;/h3&gt;&lt;p&gt;Draw a digit and watch a neural network recognise it, layer by layer.&lt;/p&gt;&lt;p&gt;Engine: nn_core {version} — written from scratch on NumPy; reads ONNX models.&lt;/p&gt;&lt;p&gt;Shortcuts: Ctrl+O open · Ctrl+Z undo · Ctrl+Shift+Z / Ctrl+Y redo · Esc / Delete clear · E eraser · [ ] pen width · Ctrl+D auto-detect scaling · Ctrl+1…5 choose scaling · Ctrl+Shift+G graph&lt;/p&gt;</source>
      <translation>&lt;h3&gt;digitscope&lt;/h3&gt;&lt;p&gt;Desenhe um dígito e veja uma rede neural reconhecê-lo, camada por camada.&lt;/p&gt;&lt;p&gt;Motor: nn_core {version} — escrito do zero em NumPy; lê modelos ONNX.&lt;/p&gt;&lt;p&gt;Atalhos: Ctrl+O abrir · Ctrl+Z desfazer · Ctrl+Shift+Z / Ctrl+Y refazer · Esc / Delete limpar · E borracha · [ ] espessura da caneta · Ctrl+D detectar escala · Ctrl+1…5 escolher escala · Ctrl+Shift+G grafo&lt;/p&gt;</translation>
    </message>
    <message>
      <location filename="../window.py" line="766" />
      <source>About digitscope</source>
      <translation>Sobre o digitscope</translation>
    </message>
    <message>
      <location filename="../window.py" line="768" />
      <source>digitscope — draw a digit, watch the network think</source>
      <translation>digitscope — desenhe um dígito, veja a rede pensar</translation>
    </message>
  </context>
  <context>
    <name>ModelSummary</name>
    <message>
      <location filename="../summary.py" line="25" />
      <source>Node</source>
      <translation>Nó</translation>
    </message>
    <message>
      <location filename="../summary.py" line="25" />
      <source>Op</source>
      <translation>Operação</translation>
    </message>
    <message>
      <location filename="../summary.py" line="26" />
      <source>Output shape</source>
      <translation>Forma da saída</translation>
    </message>
    <message>
      <location filename="../summary.py" line="26" />
      <source>Parameters</source>
      <translation>Parâmetros</translation>
    </message>
    <message>
      <location filename="../summary.py" line="27" />
      <source>File</source>
      <translation>Arquivo</translation>
    </message>
    <message>
      <location filename="../summary.py" line="27" />
      <source>Producer</source>
      <translation>Produtor</translation>
    </message>
    <message>
      <location filename="../summary.py" line="28" />
      <source>Opset</source>
      <translation>Opset</translation>
    </message>
    <message>
      <location filename="../summary.py" line="28" />
      <source>Inputs</source>
      <translation>Entradas</translation>
    </message>
    <message>
      <location filename="../summary.py" line="29" />
      <source>Outputs</source>
      <translation>Saídas</translation>
    </message>
    <message>
      <location filename="../summary.py" line="29" />
      <source>Nodes</source>
      <translation>Nós</translation>
    </message>
    <message>
      <location filename="../summary.py" line="30" />
      <source>Fed as</source>
      <translation>Entrada como</translation>
    </message>
    <message>
      <location filename="../summary.py" line="30" />
      <source>Scaling</source>
      <translation>Escala</translation>
    </message>
    <message>
      <location filename="../summary.py" line="31" />
      <source>(in memory)</source>
      <translation>(na memória)</translation>
    </message>
  </context>
  <context>
    <name>ProbabilitiesView</name>
    <message>
      <location filename="../probabilities.py" line="25" />
      <source>Draw a digit</source>
      <translation>Desenhe um dígito</translation>
    </message>
    <message>
      <location filename="../probabilities.py" line="33" />
      <source>{first} or {second}?</source>
      <translation>{first} ou {second}?</translation>
    </message>
    <message>
      <location filename="../probabilities.py" line="35" />
      <source>{first} % vs {second} % — a close call</source>
      <translation>{first} % contra {second} % — está apertado</translation>
    </message>
    <message>
      <location filename="../probabilities.py" line="37" />
      <source>{percent} % confident</source>
      <translation>{percent} % de confiança</translation>
    </message>
    <message>
      <location filename="../probabilities.py" line="140" />
      <source>computing…</source>
      <translation>calculando…</translation>
    </message>
    <message>
      <location filename="../probabilities.py" line="151" />
      <source>top %1 of %2 classes</source>
      <translation>as %1 melhores de %2 classes</translation>
    </message>
  </context>
</TS>